"""Fixtures for transfer tests: a facility (incoming, managed, destination) in tmp_path."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from autotx_lib.config import Config


def make_dataset(incoming: Path, user: str, name: str, files: dict[str, bytes]) -> Path:
    """Create incoming/<user>/<name> with the given files (relpath -> content)."""
    return write_tree(incoming / user / name, files)


def write_tree(folder: Path, files: dict[str, bytes]) -> Path:
    """Create ``folder`` with the given files (relpath -> content); returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    for relpath, content in files.items():
        target = folder / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    return folder


def tree(folder: Path) -> dict[str, bytes]:
    """relpath -> content of every file below ``folder`` (the manifest excluded)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.startswith("autotx-manifest")}


def assert_delivered_once_to(roots, files: dict[str, bytes], journal_url: str) -> None:
    """After a crash and a restart: one verified copy with one checkable manifest under each
    of ``roots``, the original in grace, every delivery done."""
    from autotx_lib import journal as J
    from autotx_lib.journal import Journal
    from autotx_lib.transfer.copy import verify_manifest

    for root in roots:
        assert sorted(p.name for p in (root / "alice").iterdir()) == ["exp"], root
        assert tree(root / "alice" / "exp") == files
        [manifest] = (root / "alice" / "exp").glob("autotx-manifest.*")
        assert verify_manifest(root / "alice" / "exp", manifest, "xxh3_128") == []
    journal = Journal(journal_url)
    [row] = [r for r in journal.all_datasets() if r.state != J.VANISHED]
    assert row.state == J.DONE and tree(Path(row.final_path)) == files
    assert {d.state for d in journal.deliveries_of(row.id)} == {"delivered"}


@pytest.fixture
def facility(tmp_path: Path) -> Config:
    """A facility whose destination has a folder for user 'alice'; no quiet period."""
    destination = tmp_path / "storage"
    (destination / "alice").mkdir(parents=True)
    return Config(incoming=tmp_path / "incoming", managed=tmp_path / "managed",
                  destination=destination, readiness={"quiet_seconds": 0},
                  host_alias="test-pc",
                  # the machine running the tests is busy: the gate has tests of its own
                  gate={"max_cpu_percent": 100, "min_available_memory_mb": 0})


class Mount:
    """A real small filesystem (tmpfs) mounted for a test, or a skip saying why not."""

    def __init__(self, path: Path, size: str = "2m", options: str = ""):
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        opts = f"size={size}" + (f",{options}" if options else "")
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip() or 'not root'}); "
                        "this test needs a real small filesystem")

    def remount(self, options: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{options}", str(self.path)], check=True)

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False)


@pytest.fixture
def mount_tmpfs():
    """Mount tmpfs filesystems on request: ``mount_tmpfs(path, size)``; unmounted after."""
    mounts: list[Mount] = []

    def make(path: Path, size: str = "2m", options: str = "") -> Mount:
        mounts.append(Mount(path, size, options))
        return mounts[-1]

    yield make
    for mount in mounts:
        mount.unmount()


def write_config(facility, path: Path, extra: str = "") -> Path:
    """The facility as a TOML file for the `autotx` command (``extra``: top-level keys)."""
    path.write_text(f'incoming = "{facility.incoming}"\nmanaged = "{facility.managed}"\n'
                    f'destination = "{facility.destination}"\nhost_alias = "pc1"\n'
                    f'agent_id = "{facility.agent_id}"\n'  # the same agent as Agent(facility)
                    'poll_seconds = 0.2\n' + extra +
                    '[readiness]\nquiet_seconds = 0\n[gate]\nmax_cpu_percent = 100\n'
                    'min_available_memory_mb = 0\n')
    return path


@pytest.fixture
def admin_mail(facility):
    """A real SMTP server on loopback; the facility mails its admin there."""
    from .test_notify import Server

    server = Server()
    facility.email.smtp_host, facility.email.smtp_port = "127.0.0.1", server.port
    facility.email.security = "none"
    facility.email.admin = "admin@example.org"
    yield server.inbox
    server.stop()
