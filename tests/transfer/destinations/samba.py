"""A throwaway Samba server on loopback, for the SMB destination's tests and benchmark.

Debian's ``smbd`` with its own configuration: a free high port on 127.0.0.1, private,
lock, state and pid folders and a tdbsam passdb inside one temporary folder, guests
refused. Its user is the system's ``nobody`` with a throwaway password in that passdb,
so nothing on the machine changes but the installed packages. Needs root.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path


def wait_until(predicate, timeout: float, what: str) -> None:
    """Poll ``predicate`` (an event: a port answers) until true; RuntimeError after timeout."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


USER, PASSWORD = "nobody", "autotx-Test-pw1"
FULL_SIZE = "4m"


def install_samba() -> str | None:
    """Install samba + smbclient if smbd is missing; the reason it cannot, else None."""
    if shutil.which("smbd") and shutil.which("smbpasswd") and shutil.which("smbclient"):
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "smbd is not installed and cannot be here (apt-get install samba smbclient as root)"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-qq", "samba", "smbclient"]
    result = subprocess.run(install, capture_output=True, text=True, env=env)
    if result.returncode != 0:  # a fresh machine: the package lists first
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env)
        result = subprocess.run(install, capture_output=True, text=True, env=env)
    if result.returncode != 0 or not shutil.which("smbd"):
        return f"apt-get install samba smbclient failed: {result.stderr.strip()[-300:]}"
    return None


def _free_port() -> int:
    for _ in range(50):
        port = 14450 + random.randrange(2000)
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                return port
    raise RuntimeError("no free port for the test Samba server")


class SambaServer:
    """A throwaway smbd on 127.0.0.1 with shares ``data``, ``ro`` and (as root) ``full``.

    ``stop()`` and ``start()`` simulate a server that goes away and comes back.
    """

    def __init__(self, base: Path, small_share: bool = True):
        self.base, self.port = base, _free_port()
        self.user, self.password = USER, PASSWORD
        self.data = base / "data"
        self.full = base / "full"
        self.process: subprocess.Popen | None = None
        for name in ("private", "lock", "state", "cache", "pid", "ncalrpc", "log", "data"):
            (base / name).mkdir(parents=True, exist_ok=True)
        self.data.chmod(0o777)
        self.has_full = small_share and self._mount_full()
        self.conf = base / "smb.conf"
        self.conf.write_text(self._config(), encoding="utf-8")
        result = subprocess.run(["smbpasswd", "-c", str(self.conf), "-a", "-s", USER],
                                input=f"{PASSWORD}\n{PASSWORD}\n", capture_output=True,
                                text=True)
        if result.returncode != 0:
            raise RuntimeError(f"smbpasswd failed: {result.stderr}")

    def _mount_full(self) -> bool:
        self.full.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={FULL_SIZE},mode=0777",
                                 "tmpfs", str(self.full)], capture_output=True, text=True)
        return result.returncode == 0

    def _config(self) -> str:
        b = self.base
        shares = {"data": f"path = {self.data}\n  read only = no",
                  "ro": f"path = {self.data}\n  read only = yes"}
        if self.has_full:
            shares["full"] = f"path = {self.full}\n  read only = no"
        return (
            "[global]\n  server role = standalone server\n"
            f"  smb ports = {self.port}\n  interfaces = 127.0.0.1\n  bind interfaces only = yes\n"
            "  disable netbios = yes\n  map to guest = never\n"
            f"  passdb backend = tdbsam:{b}/private/passdb.tdb\n  private dir = {b}/private\n"
            f"  lock directory = {b}/lock\n  state directory = {b}/state\n"
            f"  cache directory = {b}/cache\n  pid directory = {b}/pid\n"
            f"  ncalrpc dir = {b}/ncalrpc\n  log file = {b}/log/smbd.log\n"
            "  load printers = no\n  printcap name = /dev/null\n  disable spoolss = yes\n"
            + "".join(f"[{name}]\n  {body}\n" for name, body in shares.items()))

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            log = (self.base / "log" / "out.txt").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"smbd exited with {self.process.returncode}:\n{log}")
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", self.port)) == 0

    def start(self) -> None:
        """Start smbd (in a process group of its own) and wait until its port answers."""
        out = open(self.base / "log" / "out.txt", "ab")  # noqa: SIM115 - smbd writes it
        self.process = subprocess.Popen(
            ["smbd", "--foreground", "--no-process-group", "--debug-stdout", "-d", "1",
             "-s", str(self.conf)], stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
        out.close()
        wait_until(self._answers, 30, f"smbd to listen on port {self.port}")

    def stop(self) -> None:
        """Stop smbd and the children serving connections (its process group)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(15)
        wait_until(lambda: not self._port_open(), 15, "smbd's port to close")
        self.process = None

    def _port_open(self) -> bool:
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", self.port)) == 0

    def url(self, share: str = "data", path: str = "", user: str = USER) -> str:
        return f"smb://{user}@127.0.0.1:{self.port}/{share}" + (f"/{path}" if path else "")

    def cleanup(self) -> None:
        self.stop()
        if self.has_full:
            subprocess.run(["umount", "-l", str(self.full)], check=False)
        shutil.rmtree(self.base, ignore_errors=True)


