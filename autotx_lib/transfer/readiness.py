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
from collections.abc import Iterator
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
                         f"{settings.quiet_seconds:.0f} s of quiet", state)
    if settings.check_open_files:
        handles = open_files_under(root)
        if handles:
            return Readiness(False, f"{len(handles)} file(s) still open, e.g. {handles[0]}",
                             state)
    return Readiness(True, "ready", state)


def candidate_folders(incoming: Path) -> Iterator[tuple[str, Path]]:
    """``(user, dataset folder)`` for every folder two levels below ``incoming``.

    Entries that are not real folders (files, symlinks) are not candidates; the agent
    reports them once.
    """
    try:
        users = sorted(os.scandir(incoming), key=lambda e: e.name)
    except FileNotFoundError:
        return
    for user in users:
        if not user.is_dir(follow_symlinks=False):
            continue
        try:
            datasets = sorted(os.scandir(user.path), key=lambda e: e.name)
        except OSError:
            continue
        for dataset in datasets:
            if dataset.is_dir(follow_symlinks=False):
                yield user.name, Path(dataset.path)


def stray_entries(incoming: Path) -> list[str]:
    """Entries of incoming/ that are not transferable folders (symlinks, loose files)."""
    stray = []
    for level1 in sorted(incoming.iterdir()) if incoming.is_dir() else []:
        if level1.is_symlink() or not level1.is_dir():
            stray.append(f"{level1}: not a user folder (files go in incoming/<user>/<dataset>/)")
            continue
        for level2 in sorted(level1.iterdir()):
            if level2.is_symlink():
                stray.append(f"{level2}: symbolic link, not followed")
            elif not level2.is_dir():
                stray.append(f"{level2}: a loose file; put it in a dataset folder")
    return stray
