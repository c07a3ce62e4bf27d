"""`autotx dashboard ...` as a real process, for the page tests: its URL, token and kernels."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(base: str, process: subprocess.Popen, log: Path, seconds: float = 90) -> None:
    """Wait until the server at ``base`` answers HTTP (any status); fail if ``process`` ends."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited: {log.read_text()}")
        try:
            urllib.request.urlopen(f"{base}voila/api/shutdown", timeout=1)
        except urllib.error.HTTPError:
            return  # the server answers
        except OSError:
            time.sleep(0.2)
            continue
        return
    raise AssertionError(f"no answer on {base}: {log.read_text()}")


class Served:
    """`autotx dashboard ...` running in its own process group, stopped by its id."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}/"
        self.log = log
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "autotx_lib.cli", "dashboard", *args, "--port", str(self.port)],
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
            env=None if env is None else {**os.environ, **env})
        wait_for_http(self.base, self.process, log)
        printed = re.search(r"serving \S+ at (http://\S+\?token=(\S+))", log.read_text())
        assert printed, f"no URL with a token printed: {log.read_text()}"
        self.url, self.token = printed.group(1), printed.group(2)
        assert self.url.startswith(self.base)

    def kernels(self) -> list[psutil.Process]:
        """The kernel processes under this server (one per open page)."""
        found = []
        for child in psutil.Process(self.process.pid).children(recursive=True):
            try:
                if "ipykernel_launcher" in " ".join(child.cmdline()):
                    found.append(child)
            except psutil.NoSuchProcess:
                pass
        return found

    def wait_for_kernels(self, count: int, seconds: float = 120) -> None:
        deadline = time.monotonic() + seconds
        while len(self.kernels()) != count:
            assert time.monotonic() < deadline, \
                f"{len(self.kernels())} kernels, expected {count}: {self.log.read_text()[-3000:]}"
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM to `autotx dashboard` alone must take Voila and its kernels down with it."""
        leftover = False
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        deadline = time.monotonic() + 30
        while True:
            try:
                os.killpg(self.process.pid, 0)  # anything left in the command's group?
            except ProcessLookupError:
                break
            if time.monotonic() > deadline:
                leftover = True
                os.killpg(self.process.pid, signal.SIGKILL)
                break
            time.sleep(0.2)
        self._log.close()
        assert not leftover, "Voila outlived `autotx dashboard` after SIGTERM"
