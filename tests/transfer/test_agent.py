"""The agent end to end on real folders: lifecycle, clashes, unmatched, and every bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from autotx_lib import journal as J
from autotx_lib.config import Config
from autotx_lib.journal import Journal
from autotx_lib.transfer.agent import Agent
from autotx_lib.transfer.copy import verify_manifest

from .conftest import make_dataset, tree


def deliver(config: Config):
    return Agent(config).run(once=True)


def test_dataset_is_delivered_verified_and_source_kept_in_grace(facility):
    files = {"img_000.tif": os.urandom(70_000), "sub/dir/meta.xml": b"<OME/>",
             "big.raw": os.urandom(9 * 1024 * 1024 + 3)}
    make_dataset(facility.incoming, "alice", "exp1", files)

    summary = deliver(facility)

    assert summary.ok and len(summary.delivered) == 1
    delivered = facility.destination / "alice" / "exp1"
    assert tree(delivered) == files
    manifest = delivered / "autotx-manifest.xxh128"
    assert verify_manifest(delivered, manifest, "xxh3_128") == []
    done = list((facility.managed / "done" / "alice").iterdir())
    assert len(done) == 1 and done[0].name.endswith("__exp1") and tree(done[0]) == files
    assert not (facility.incoming / "alice" / "exp1").exists()
    assert list((facility.managed / "processing").iterdir()) == []
    assert not any((facility.destination / ".autotx-tmp").rglob("*.raw"))
    row = Journal(facility.journal_url).dataset(summary.delivered[0])
    assert row.state == J.DONE and row.total_files == 3 and row.copied_bytes == sum(
        len(v) for v in files.values())


@pytest.mark.parametrize("algorithm", ["xxh3_128", "blake3", "sha256", "md5"])
def test_every_algorithm_writes_a_manifest_that_verifies(facility, algorithm):
    facility.verify.algorithm = algorithm
    make_dataset(facility.incoming, "alice", "exp", {"a.bin": os.urandom(1000)})
    assert deliver(facility).ok
    delivered = facility.destination / "alice" / "exp"
    manifests = list(delivered.glob("autotx-manifest.*"))
    assert len(manifests) == 1
    assert verify_manifest(delivered, manifests[0], algorithm) == []


def test_name_clash_gets_a_suffix_and_never_overwrites(facility):
    existing = facility.destination / "alice" / "exp"
    existing.mkdir()
    (existing / "old.txt").write_bytes(b"old data")
    make_dataset(facility.incoming, "alice", "exp", {"new.txt": b"new data"})

    assert deliver(facility).ok

    assert (existing / "old.txt").read_bytes() == b"old data"
    assert not (existing / "new.txt").exists()
    assert tree(facility.destination / "alice" / "exp_1") == {"new.txt": b"new data"}


def test_user_without_destination_folder_goes_to_unmatched(facility):
    make_dataset(facility.incoming, "bob", "exp", {"a.txt": b"a"})
    summary = deliver(facility)
    assert summary.unmatched and not summary.delivered
    moved = list((facility.managed / "unmatched" / "bob").iterdir())
    assert len(moved) == 1 and tree(moved[0]) == {"a.txt": b"a"}
    assert not (facility.destination / "bob").exists()


def test_create_user_dirs_makes_the_user_folder(facility):
    facility.create_user_dirs = True
    make_dataset(facility.incoming, "bob", "exp", {"a.txt": b"a"})
    assert deliver(facility).ok
    assert tree(facility.destination / "bob" / "exp") == {"a.txt": b"a"}


def quarantined(config: Config, user: str) -> tuple[Path, str]:
    entries = sorted((config.managed / "error" / user).iterdir())
    folder = next(p for p in entries if p.is_dir())
    reason = (folder.parent / f"{folder.name}.reason.txt").read_text()
    return folder, reason


def test_empty_dataset_is_quarantined_with_a_reason(facility):
    (facility.incoming / "alice" / "empty" / "sub").mkdir(parents=True)
    summary = deliver(facility)
    assert summary.failed and not summary.ok
    folder, reason = quarantined(facility, "alice")
    assert (folder / "sub").is_dir()
    assert "contains no files" in reason and "Nothing was deleted" in reason
    assert not (facility.destination / "alice" / "empty").exists()


def test_file_name_that_is_not_utf8_quarantines_the_dataset_untouched(facility):
    folder = make_dataset(facility.incoming, "alice", "exp", {"good.txt": b"g"})
    bad = os.fsencode(folder) + b"/bad\xff\xfename.tif"
    with open(bad, "wb") as handle:
        handle.write(b"pixels")
    summary = deliver(facility)
    assert summary.failed
    quarantine, reason = quarantined(facility, "alice")
    assert "not valid UTF-8" in reason
    names = sorted(os.listdir(os.fsencode(quarantine)))
    assert names == [b"bad\xff\xfename.tif", b"good.txt"]
    assert not (facility.destination / "alice" / "exp").exists()
    assert not any((facility.destination / ".autotx-tmp").rglob("*.txt"))


def test_dataset_folder_name_that_is_not_utf8_is_quarantined(facility):
    user = facility.incoming / "alice"
    user.mkdir(parents=True)
    os.mkdir(os.fsencode(user) + b"/run\xff")
    with open(os.fsencode(user) + b"/run\xff/a.txt", "wb") as handle:
        handle.write(b"a")
    summary = deliver(facility)
    assert summary.failed
    quarantine, reason = quarantined(facility, "alice")
    assert (quarantine / "a.txt").read_bytes() == b"a"
    assert "not valid UTF-8" in reason


def test_control_characters_and_too_long_paths_are_refused(facility):
    make_dataset(facility.incoming, "alice", "newline", {"a\nb.txt": b"x"})
    deep = "/".join(["d" * 200] * 16) + "/f.txt"  # 3,200+ bytes: too long for most shares
    make_dataset(facility.incoming, "alice", "deep", {deep: b"x"})
    summary = deliver(facility)
    assert len(summary.failed) == 2
    reasons = sorted(p.read_text() for p in (facility.managed / "error" / "alice").glob("*.txt"))
    assert any("control character" in r for r in reasons)
    assert any("too long" in r for r in reasons)


def test_symlinks_are_never_followed_and_are_reported(facility, tmp_path):
    secret = tmp_path / "outside.txt"
    secret.write_bytes(b"not part of the dataset")
    folder = make_dataset(facility.incoming, "alice", "exp", {"a.txt": b"a"})
    (folder / "escape").symlink_to(secret)
    (folder / "escape_dir").symlink_to(tmp_path)
    (facility.incoming / "alice" / "linked_dataset").symlink_to(tmp_path)

    agent = Agent(facility)
    summary = agent.run(once=True)

    assert summary.ok
    assert tree(facility.destination / "alice" / "exp") == {"a.txt": b"a"}
    messages = [e.message for e in agent.journal.recent_events(50)]
    assert any("escape: symbolic link" in m for m in messages)
    assert any("linked_dataset: symbolic link, not followed" in m for m in messages)
    assert secret.read_bytes() == b"not part of the dataset"
    # reported once, not at every scan
    Agent(facility).run(once=True)
    assert sum("linked_dataset" in e.message for e in agent.journal.recent_events(100)) == 1


def test_missing_destination_waits_and_nothing_partial_appears(facility):
    storage = facility.destination
    os.rename(storage, storage.with_name("storage-offline"))
    make_dataset(facility.incoming, "alice", "exp", {"a.txt": b"a"})

    summary = deliver(facility)

    assert summary.retrying and not summary.ok
    assert not storage.exists()
    row = Journal(facility.journal_url).dataset(summary.retrying[0])
    assert row.state == J.QUEUED and "missing or not mounted" in row.error
    assert row.next_attempt_at is not None
    assert tree(Path(row.processing_path)) == {"a.txt": b"a"}

    os.rename(storage.with_name("storage-offline"), storage)
    assert deliver(facility).ok
    assert tree(storage / "alice" / "exp") == {"a.txt": b"a"}


def test_read_only_destination_waits(facility, mount_tmpfs):
    mount = mount_tmpfs(facility.destination, "4m")
    (facility.destination / "alice").mkdir()
    mount.remount("ro")
    make_dataset(facility.incoming, "alice", "exp", {"a.txt": b"a"})

    summary = deliver(facility)

    assert summary.retrying
    row = Journal(facility.journal_url).dataset(summary.retrying[0])
    assert "read-only" in row.error and row.state == J.QUEUED
    mount.remount("rw")
    assert deliver(facility).ok
    assert tree(facility.destination / "alice" / "exp") == {"a.txt": b"a"}


def test_full_destination_fails_cleanly_removes_partial_tmp_and_retries(facility, mount_tmpfs):
    mount = mount_tmpfs(facility.destination, "2m")
    (facility.destination / "alice").mkdir()
    files = {f"f{i}.bin": os.urandom(700_000) for i in range(4)}  # 2.8 MB > 2 MB
    make_dataset(facility.incoming, "alice", "exp", files)

    summary = deliver(facility)

    assert summary.retrying and not summary.delivered
    row = Journal(facility.journal_url).dataset(summary.retrying[0])
    assert "no space left" in row.error
    assert not (facility.destination / "alice" / "exp").exists()
    assert not any((facility.destination / ".autotx-tmp").rglob("*.bin")), "partial tmp kept"
    assert tree(Path(row.processing_path)) == files

    mount.remount("size=20m")
    assert deliver(facility).ok
    assert tree(facility.destination / "alice" / "exp") == files


def test_not_ready_dataset_is_left_alone(facility):
    facility.readiness.quiet_seconds = 3600
    make_dataset(facility.incoming, "alice", "exp", {"a.txt": b"a"})
    summary = deliver(facility)
    assert summary.ok and not summary.delivered
    assert summary.waiting and "waiting for 3600 s of quiet" in summary.waiting[0]
    assert (facility.incoming / "alice" / "exp" / "a.txt").exists()


def test_marker_file_is_required_when_configured(facility):
    facility.readiness.marker_file = "acquisition.done"
    folder = make_dataset(facility.incoming, "alice", "exp", {"a.txt": b"a"})
    assert not deliver(facility).delivered
    (folder / "acquisition.done").write_text("")
    assert deliver(facility).delivered


def test_unreadable_file_quarantines_the_dataset_and_keeps_it(facility, tmp_path):
    # root reads any file: run the agent as root without the capabilities that bypass file
    # permissions, so it meets a real "permission denied" (as a service account would)
    runner = []
    if os.geteuid() == 0:
        runner = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
    folder = make_dataset(facility.incoming, "alice", "exp", {"ok.txt": b"ok",
                                                               "locked.tif": b"secret"})
    os.chmod(folder / "locked.tif", 0o000)
    config_file = tmp_path / "autotx.toml"
    config_file.write_text(f'incoming = "{facility.incoming}"\nmanaged = "{facility.managed}"\n'
                           f'destination = "{facility.destination}"\n[readiness]\n'
                           'quiet_seconds = 0\n[gate]\nmax_cpu_percent = 100\n')
    result = subprocess.run([*runner, sys.executable, "-m", "autotx_lib.cli", "run", "--once",
                             "-c", str(config_file)], capture_output=True, text=True)
    assert result.returncode == 1, result.stderr
    assert "cannot read" in result.stderr and "locked.tif" in result.stderr
    quarantine, reason = quarantined(facility, "alice")
    assert "permission" in reason.lower()
    assert (quarantine / "ok.txt").read_bytes() == b"ok"
    os.chmod(quarantine / "locked.tif", 0o600)
    assert (quarantine / "locked.tif").read_bytes() == b"secret"
    assert not (facility.destination / "alice" / "exp").exists()


def test_file_still_being_written_is_never_delivered_half(facility):
    """A source file that changes during every copy attempt is not delivered."""
    from autotx_lib.transfer import copy as C

    folder = make_dataset(facility.incoming, "alice", "exp", {"growing.raw": b"x" * 100_000})
    original = C._stream

    def stream_and_grow(*args):
        copied = original(*args)
        with open(facility.managed / "processing" / os.listdir(facility.managed / "processing")[0]
                  / "growing.raw", "ab") as handle:
            handle.write(b"more")
        return copied

    C._stream = stream_and_grow
    try:
        summary = deliver(facility)
    finally:
        C._stream = original
    assert summary.retrying and not summary.delivered
    row = Journal(facility.journal_url).dataset(summary.retrying[0])
    assert "changed during" in row.error
    assert not (facility.destination / "alice" / "exp").exists()
    assert not folder.exists()  # owned by the agent now, waiting in processing/
    assert (Path(row.processing_path) / "growing.raw").stat().st_size > 100_000
