"""Is an acquisition finished?

A dataset folder is ready when, all at once:

* nothing under it changed for ``quiet_seconds``: the newest modification *or* status
  change time over the whole tree (files and folders) is older than that. The status
  change time (ctime) catches files copied in with preserved modification times;
* no process holds a file under it open (/proc on Linux, else psutil; other users'
  processes are only visible when the agent runs as root or as their user; symbolic
  links on the way to the folder are resolved, as the system names open files);
* the marker file is present at its top level, when one is configured.

Times in the future (an instrument PC or file server whose clock is ahead) say nothing
about quiet: then the agent measures quiet with its own clock, from the moment it first
saw the tree in its current state (file count, size and newest time unchanged).
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from autotx_lib.config import ReadinessSettings

FUTURE_TOLERANCE_SECONDS = 60.0  # times this far ahead of the agent's clock are not trusted


@dataclass(frozen=True)
class TreeState:
    """A summary of a folder tree: newest change, number of files, total size."""

    newest_change: float
    files: int
    total_bytes: int


@dataclass(frozen=True)
class Readiness:
    """The answer for one dataset folder; ``reason`` says why it is not ready yet."""

    ready: bool
    reason: str
    state: TreeState
    quiet_until: float | None = None  # not ready before this time.time(), whatever happens
    unchanged_since: float | None = None  # since when the agent sees ``state`` unchanged
    clock_skew: float | None = None  # seconds the newest file time is ahead of the clock


def tree_state(root: Path) -> TreeState:
    """Newest mtime/ctime over ``root`` and everything below it (symlinks not followed)."""
    root_stat = os.lstat(root)
    newest = max(root_stat.st_mtime, root_stat.st_ctime)
    count = 0
    total = 0
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue  # unreadable folders are reported when the dataset is listed for copy
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            newest = max(newest, st.st_mtime, st.st_ctime)
            if stat.S_ISDIR(st.st_mode):
                stack.append(Path(entry.path))
            else:
                count += 1
                total += st.st_size
    return TreeState(newest, count, total)


def open_files_under(root: Path) -> list[str]:
    """Files under ``root`` that some other process holds open, as "path (process pid)".

    The kernel names open files by their real path, so ``root`` is resolved first: a
    symbolic link on the way to incoming/ must not hide them. On Linux the descriptors
    are read from /proc directly (psutil's ``open_files`` also reads every descriptor's
    offset and flags: several times slower); elsewhere psutil reads them.
    """
    prefix = os.path.join(os.path.realpath(root), "")
    held = _proc_open_files(prefix) if os.path.isdir("/proc/self/fd") else \
        _psutil_open_files(prefix)
    return [f"{path} ({_process_name(pid)} {pid})" for pid, path in held]


def _proc_open_files(prefix: str) -> list[tuple[int, str]]:
    """(pid, path) of every regular file under ``prefix`` open in another process (Linux)."""
    me = os.getpid()
    found = []
    for process in os.scandir("/proc"):
        if not process.name.isdigit() or int(process.name) == me:
            continue
        try:
            descriptors = os.scandir(f"/proc/{process.name}/fd")
        except OSError:
            continue  # gone, or another user's (visible only to root): as with psutil
        with descriptors:
            for fd in descriptors:
                try:
                    path = os.readlink(fd.path)
                except OSError:
                    continue
                # regular files only, as psutil: a deleted file reads "<path> (deleted)"
                if path.startswith(prefix) and os.path.isfile(path):
                    found.append((int(process.name), path))
    return found


def _psutil_open_files(prefix: str) -> list[tuple[int, str]]:
    me = os.getpid()
    found = []
    for process in psutil.process_iter(["pid"]):
        if process.info["pid"] == me:
            continue
        try:
            for handle in process.open_files():
                if handle.path.startswith(prefix):
                    found.append((process.info["pid"], handle.path))
        except (psutil.Error, OSError):
            continue
    return found


def _process_name(pid: int) -> str:
    try:
        return psutil.Process(pid).name()
    except psutil.Error:
        return "?"  # ended meanwhile


def check_ready(root: Path, settings: ReadinessSettings, now: float | None = None,
                seen: tuple[TreeState, float] | None = None) -> Readiness:
    """Decide whether the dataset folder ``root`` is finished.

    Parameters
    ----------
    root : Path
        The dataset folder (``incoming/<user>/<dataset>``).
    settings : ReadinessSettings
        Quiet period, marker file, open-file check.
    now : float, optional
        The current time (``time.time()``), for tests.
    seen : (TreeState, float), optional
        The tree's state at an earlier look and since when it was unchanged then
        (``Readiness.state`` and ``Readiness.unchanged_since`` of that look). Used when
        file times lie in the future: quiet is then measured from that moment.

    Returns
    -------
    readiness : Readiness
    """
    state = tree_state(root)
    now = time.time() if now is None else now
    since = seen[1] if seen is not None and seen[0] == state else now
    skew = state.newest_change - now
    if skew <= FUTURE_TOLERANCE_SECONDS:
        skew = None
    if settings.marker_file and not (root / settings.marker_file).is_file():
        return Readiness(False, f"waiting for the marker file {settings.marker_file}", state,
                         unchanged_since=since, clock_skew=skew)
    if skew is not None:  # the file times cannot be trusted: use our own observation
        quiet_for = now - since
        if quiet_for < settings.quiet_seconds:
            return Readiness(False, f"files are dated up to {skew:.0f} s in the future (clock "
                             f"skew?); unchanged for {quiet_for:.0f} s by the agent's clock, "
                             f"waiting for {settings.quiet_seconds:.0f} s", state,
                             unchanged_since=since, clock_skew=skew)
    else:
        quiet_for = now - state.newest_change
        if quiet_for < settings.quiet_seconds:
            return Readiness(False, f"changed {quiet_for:.0f} s ago; waiting for "
                             f"{settings.quiet_seconds:.0f} s of quiet", state,
                             quiet_until=state.newest_change + settings.quiet_seconds,
                             unchanged_since=since)
    if settings.check_open_files:
        handles = open_files_under(root)
        if handles:
            return Readiness(False, f"{len(handles)} file(s) still open, e.g. {handles[0]}",
                             state, unchanged_since=since, clock_skew=skew)
    return Readiness(True, "ready", state, unchanged_since=since, clock_skew=skew)


def scan_incoming(incoming: Path) -> tuple[list[tuple[str, Path]], list[str]]:
    """One pass over ``incoming/<user>/<dataset>``.

    User folders whose names start with a dot (``.autotx-tmp``, ``.Trash-1000``) are not
    users: at the destination such a name could be the agent's own tmp area.

    Returns
    -------
    candidates : list of (user, folder)
        Every real folder two levels down, sorted by user and name.
    strays : list of str
        Entries that cannot be transferred (symlinks, loose files), each with why; the
        agent reports each once.
    """
    candidates: list[tuple[str, Path]] = []
    strays: list[str] = []
    try:
        users = sorted(os.scandir(incoming), key=lambda e: e.name)
    except FileNotFoundError:
        return candidates, strays
    for user in users:
        if not user.is_dir(follow_symlinks=False):
            strays.append(f"{user.path}: not a user folder (files go in "
                          "incoming/<user>/<dataset>/)")
            continue
        if user.name.startswith("."):
            strays.append(f"{user.path}: not a user folder (a user name cannot start with "
                          "'.'); rename it to the user's name")
            continue
        try:
            entries = sorted(os.scandir(user.path), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                candidates.append((user.name, Path(entry.path)))
            elif entry.is_symlink():
                strays.append(f"{entry.path}: symbolic link, not followed")
            else:
                strays.append(f"{entry.path}: a loose file; put it in a dataset folder")
    return candidates, strays
