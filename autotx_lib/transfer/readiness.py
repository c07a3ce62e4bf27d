"""Is an acquisition finished?

A dataset folder is ready when, all at once:

* nothing under it changed for ``quiet_seconds``: the newest modification *or* status
  change time over the whole tree (files and folders) is older than that. The status
  change time (ctime) catches files copied in with preserved modification times;
* no process holds a file under it open (psutil; other users' processes are only
  visible when the agent runs as root or as their user);
* the marker file is present at its top level, when one is configured.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from autotx_lib.config import ReadinessSettings


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
    """Files under ``root`` that some other process holds open, as "path (process pid)"."""
    prefix = os.path.join(os.path.abspath(root), "")
    me = os.getpid()
    found = []
    for process in psutil.process_iter(["pid", "name"]):
        if process.info["pid"] == me:
            continue
        try:
            for handle in process.open_files():
                if handle.path.startswith(prefix):
                    found.append(f"{handle.path} ({process.info['name']} {process.info['pid']})")
        except (psutil.Error, OSError):
            continue
    return found


def check_ready(root: Path, settings: ReadinessSettings, now: float | None = None) -> Readiness:
    """Decide whether the dataset folder ``root`` is finished.

    Parameters
    ----------
    root : Path
        The dataset folder (``incoming/<user>/<dataset>``).
    settings : ReadinessSettings
        Quiet period, marker file, open-file check.
    now : float, optional
        The current time (``time.time()``), for tests.

    Returns
    -------
    readiness : Readiness
    """
    state = tree_state(root)
    now = time.time() if now is None else now
    if settings.marker_file and not (root / settings.marker_file).is_file():
        return Readiness(False, f"waiting for the marker file {settings.marker_file}", state)
    quiet_for = now - state.newest_change
    if quiet_for < settings.quiet_seconds:
        return Readiness(False, f"changed {quiet_for:.0f} s ago; waiting for "
                         f"{settings.quiet_seconds:.0f} s of quiet", state,
                         quiet_until=state.newest_change + settings.quiet_seconds)
    if settings.check_open_files:
        handles = open_files_under(root)
        if handles:
            return Readiness(False, f"{len(handles)} file(s) still open, e.g. {handles[0]}",
                             state)
    return Readiness(True, "ready", state)


def scan_incoming(incoming: Path) -> tuple[list[tuple[str, Path]], list[str]]:
    """One pass over ``incoming/<user>/<dataset>``.

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
