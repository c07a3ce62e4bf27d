"""One agent per managed folder and per journal: an operating-system lock.

The lock is held on ``managed/.autotx-agent.lock`` (and, for a SQLite journal kept
elsewhere, on ``<journal>.agent-lock``) for as long as :meth:`Agent.run` runs. The
operating system releases it when the process ends, however it ends (kill -9, power
loss), so a lock that can be taken proves that the previous agent is gone: only then is
an unfinished previous session an unclean shutdown.

The file also holds who has it (pid, host, start time), so a second agent can say
which agent is running instead of crashing into it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import sys
from pathlib import Path

from autotx_lib.errors import AgentRunningError

LOCK_NAME = ".autotx-agent.lock"


def _try_lock(fd: int) -> bool:
    """Take an exclusive lock on ``fd`` without waiting; False when another holds it."""
    if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _holder(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}


class AgentLock:
    """Exclusive, process-lifetime locks on a set of lock files.

    Parameters
    ----------
    paths : list of Path
        Lock files to hold (created if missing, mode 0600).

    Examples
    --------
    >>> lock = AgentLock([Path("/data/managed/.autotx-agent.lock")])   # doctest: +SKIP
    >>> with lock:                                                       # doctest: +SKIP
    ...     ...   # no other agent can use this managed folder now
    """

    def __init__(self, paths: list[Path]):
        self.paths = list(dict.fromkeys(paths))
        self._fds: list[int] = []

    def acquire(self) -> None:
        """Take every lock, or none.

        Raises
        ------
        AgentRunningError
            Another process holds one of them; the error names its pid, host and start.
        """
        for path in self.paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            if not _try_lock(fd):
                os.close(fd)
                self.release()
                raise AgentRunningError(path, _holder(path))
            self._fds.append(fd)
            info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                               "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")})
            os.ftruncate(fd, 0)
            os.pwrite(fd, info.encode(), 0)

    def release(self) -> None:
        """Release the locks (the OS also does when the process ends)."""
        for fd in self._fds:
            os.close(fd)
        self._fds.clear()

    def __enter__(self) -> AgentLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def lock_paths(managed: Path, journal_url: str) -> list[Path]:
    """The lock files of an agent: its managed folder, and a SQLite journal kept elsewhere."""
    paths = [managed / LOCK_NAME]
    if journal_url.startswith("sqlite"):
        from sqlalchemy.engine import make_url

        database = make_url(journal_url).database
        if database and database != ":memory:" and \
                Path(database).resolve().parent != managed.resolve():
            paths.append(Path(database).with_name(Path(database).name + ".agent-lock"))
    return paths


__all__ = ["AgentLock", "LOCK_NAME", "lock_paths"]
