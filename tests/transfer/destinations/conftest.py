"""Fixtures: a real Samba server on loopback, and the destinations the conformance suite runs on.

The Samba server is Debian's ``smbd`` with a throwaway configuration (a high loopback
port, private/lock/state/pid dirs and a tdbsam passdb in a temporary folder, guests
refused). Its user is the system's ``nobody`` with a throwaway password in that passdb,
so nothing on the machine changes but the installed packages. When ``smbd`` is missing
the fixture installs ``samba`` and ``smbclient`` with apt-get (as root, as in CI) and
skips the SMB tests, saying why, when that is not possible.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import pytest

from autotx_lib.transfer.destinations import LocalDestination, open_destination

from .samba import SambaServer, install_samba


@pytest.fixture(scope="session")
def samba():
    """A running Samba server (session-wide), or a skip that says why there is none."""
    pytest.importorskip("smbprotocol", reason="SMB tests need smbprotocol: "
                        'pip install "autotx_lib[smb]"')
    reason = install_samba()
    if reason:
        pytest.skip(reason)
    if os.geteuid() != 0:
        pytest.skip("the test Samba server runs as root (it serves the user 'nobody')")
    base = Path(tempfile.mkdtemp(prefix="autotx-smb-"))
    base.chmod(0o755)  # the share's user (nobody) must reach its folders
    server = SambaServer(base)
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def smb_env(samba) -> dict[str, str]:
    """An environment holding the test password (password_env = AUTOTX_TEST_SMB_PASSWORD)."""
    return {"AUTOTX_TEST_SMB_PASSWORD": samba.password}


@pytest.fixture
def smb_folder(samba, request) -> str:
    """A fresh folder in the ``data`` share for one test (its relative path)."""
    name = f"t-{os.getpid()}-{request.node.name[:40]}-{random.randrange(10**6)}"
    name = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
    folder = samba.data / name
    folder.mkdir()
    folder.chmod(0o777)
    return name


def share_folder(samba, name: str) -> str:
    """Make folder ``name`` in the test share, writable by the server's user (nobody);
    returns ``name``."""
    folder = samba.data / name
    folder.mkdir()
    folder.chmod(0o777)
    return name


def open_smb(samba, env, share: str = "data", path: str = "", **kwargs):
    """An SMB destination on the test server (password from the environment)."""
    return open_destination(samba.url(share, path),
                            {"password_env": "AUTOTX_TEST_SMB_PASSWORD"}, environ=env,
                            timeout=5, **kwargs)


@pytest.fixture(params=["local", "smb"])
def dest(request, tmp_path):
    """Each transport in turn, on an empty folder: the conformance suite runs on both."""
    if request.param == "local":
        root = tmp_path / "dest"
        root.mkdir()
        yield LocalDestination(root)
        return
    samba = request.getfixturevalue("samba")
    env = request.getfixturevalue("smb_env")
    folder = request.getfixturevalue("smb_folder")
    with open_smb(samba, env, path=folder) as destination:
        yield destination


@pytest.fixture
def vanish_destination(request):
    """A function making a destination's folder disappear (as an unmounted share's would)."""
    def vanish(destination) -> None:
        if isinstance(destination, LocalDestination):
            root = destination.root
        else:
            root = request.getfixturevalue("samba").data / destination.folder
        os.rename(root, root.with_name(root.name + "-gone"))
    return vanish


def run_with_server_stopped(samba, config, after_files: int = 2):
    """One agent pass during which the Samba server stops once ``after_files`` files are
    copied (and is started again afterwards); returns the pass's summary."""
    from autotx_lib.transfer.agent import Agent

    stopped = []

    def stop_server(progress) -> None:
        if progress.files_done >= after_files and not stopped:
            stopped.append(progress.files_done)
            samba.stop()

    try:
        summary = Agent(config, on_progress=stop_server).run(once=True)
    finally:
        if samba.process is None:
            samba.start()
    assert stopped, "the copy ended before the server could be stopped"
    return summary
