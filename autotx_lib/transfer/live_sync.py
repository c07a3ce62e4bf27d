"""Live sync: while a session runs, copy the user's finished files to the destination's
staging area, so that little is left to copy when the session ends.

Each pass walks ``incoming/<user>/``; a regular file unchanged for
``[sessions] live_quiet_seconds`` and not synced yet (or changed since: a new size or
time whose content hash differs) is copied, hashed while read and read back, to
``<destination>/<tmp>/live/<session>/<relpath>`` (through a ``.part`` name, so a staged
file is always whole). The journal remembers each staged file's size, time and digest.
At the final transfer (the normal one, once the session ended) a file unchanged since it
was staged is moved into the dataset's tmp copy instead of copied again, and the dataset
is delivered with the same guarantees as always: one manifest, one rename.

The copy is under the gate like every other (``throttle``): the acquisition always wins.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from autotx_lib.config import Config
from autotx_lib.errors import UnsafePathError
from autotx_lib.journal import Journal
from autotx_lib.journal.instrument_sessions import SessionStore
from autotx_lib.transfer import copy as C
from autotx_lib.transfer.destination import check_destination
from autotx_lib.transfer.layout import check_name

log = logging.getLogger("autotx.live_sync")


@dataclass
class SyncStep:
    """What one pass did: files and bytes copied, files seen, whether it stopped early."""

    copied_files: int = 0
    copied_bytes: int = 0
    seen_files: int = 0
    seen_bytes: int = 0
    unchanged_by_hash: int = 0  # a new time, the same content: not copied again
    waiting: int = 0  # files still being written (synced once quiet)
    newest_change: float = 0.0
    interrupted: bool = False


def staging_root(config: Config, session_id: int) -> Path:
    """Where a session's files are staged at the destination."""
    return config.tmp_path / "live" / str(session_id)


def _walk(root: Path, prefix: str = "") -> Iterator[tuple[str, os.stat_result]]:
    """Regular files below ``root`` (symlinks not followed), names not checked (see step)."""
    try:
        entries = list(os.scandir(root / prefix if prefix else root))
    except OSError:
        return
    for entry in entries:
        try:
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        relpath = f"{prefix}/{entry.name}" if prefix else entry.name
        if stat.S_ISDIR(info.st_mode):
            yield from _walk(root, relpath)
        elif stat.S_ISREG(info.st_mode):
            yield relpath, info


def _safe(relpath: str) -> bool:
    try:
        for part in relpath.split("/"):
            check_name(part)
    except UnsafePathError:
        return False  # reported when its dataset is claimed (quarantined)
    return True


@dataclass
class Staged:
    """A file copied to the staging area: as it was when staged."""

    id: int
    size: int
    mtime_ns: int
    ctime_ns: int | None
    digest: str
    staged_path: str

    def matches(self, info: os.stat_result) -> bool:
        """The file is as it was when staged (size, modification and status-change time)."""
        return (self.size, self.mtime_ns, self.ctime_ns) == \
            (info.st_size, info.st_mtime_ns, info.st_ctime_ns)


class LiveSync:
    """Syncs one session's files; call :meth:`step` once per agent pass.

    Keep one instance per session: it remembers what was staged (read from the journal
    once), so a pass over thousands of unchanged files costs little more than their stat.

    Parameters
    ----------
    config : Config
    journal : Journal
    session_id : int
    throttle : Throttle, optional
        The gate (pauses, bandwidth cap), as for any copy; can be set per step.
    """

    def __init__(self, config: Config, journal: Journal, session_id: int,
                 throttle: C.Throttle | None = None):
        self.config = config
        self.journal = journal
        self.session_id = session_id
        self.store = SessionStore(journal)
        self.throttle = throttle
        self.staged = {relpath: Staged(r.id, r.size, r.mtime_ns, r.ctime_ns, r.digest,
                                       r.staged_path)
                       for relpath, r in self.store.live_files(session_id).items()}
        self._walked_at: float | None = None  # time.monotonic() of the last whole pass
        self._pending = False  # the last pass left files to copy (budget, still written)

    def step(self, session, *, now: float | None = None, budget_seconds: float = 2.0,
             should_stop: Callable[[], bool] | None = None) -> SyncStep:
        """One pass over ``incoming/<user>/``; stops after ``budget_seconds`` of copying.

        Staged copies of files that are no longer there (deleted during the session) are
        removed from the staging area.

        Raises
        ------
        DestinationError
            The destination is not there, not marked (not mounted) or not writable: nothing
            is written anywhere, the next pass tries again.
        """
        started = time.monotonic()
        # a file must be quiet for live_quiet_seconds: looking more often than twice in
        # that time finds nothing new, and a pass over thousands of files is not free
        interval = self.config.sessions.live_quiet_seconds / 2
        if self._walked_at is not None and not self._pending and \
                started - self._walked_at < interval:
            return SyncStep()
        check_destination(self.config.destination, self.journal, self.config.host_alias)
        now = time.time() if now is None else now
        root = self.config.incoming / session.user
        result = SyncStep()
        seen = set()
        for relpath, info in sorted(_walk(root)):
            seen.add(relpath)
            result.seen_files += 1
            result.seen_bytes += info.st_size
            changed = max(info.st_mtime, info.st_ctime)
            result.newest_change = max(result.newest_change, changed)
            known = self.staged.get(relpath)
            if known is not None and known.matches(info):
                continue
            if now - changed < self.config.sessions.live_quiet_seconds:
                result.waiting += 1  # still being written: next pass
                continue
            if known is None and not _safe(relpath):
                continue  # a name the claim will quarantine
            if result.interrupted or time.monotonic() - started > budget_seconds or \
                    (should_stop is not None and should_stop()):
                result.interrupted = True
                continue
            self._sync_file(root, relpath, info, known, result)
        self._drop_vanished(seen)
        self._walked_at = started
        self._pending = result.interrupted
        if result.newest_change:
            self.store.touch(session.id, _utc_from_timestamp(result.newest_change))
        return result

    def _drop_vanished(self, seen: set[str]) -> None:
        """Staged copies of files deleted from incoming/ during the session are not needed."""
        gone = [relpath for relpath in self.staged if relpath not in seen]
        for relpath in gone:
            Path(self.staged[relpath].staged_path).unlink(missing_ok=True)
        self.store.forget([self.staged.pop(relpath).id for relpath in gone])

    def _sync_file(self, root: Path, relpath: str, info: os.stat_result, known: Staged | None,
                   result: SyncStep) -> None:
        algorithm = self.config.verify.algorithm
        source = root / relpath
        if known is not None and known.size == info.st_size and \
                Path(known.staged_path).is_file() and \
                C.hash_file(source, algorithm) == known.digest:  # touched, not changed
            self._record(relpath, info.st_size, info.st_mtime_ns, info.st_ctime_ns,
                         known.digest, known.staged_path, copied=False)
            result.unchanged_by_hash += 1
            return
        target = staging_root(self.config, self.session_id) / relpath
        part = target.with_name(target.name + ".part")
        part.parent.mkdir(parents=True, exist_ok=True)
        copied = C.copy_file(source, part, algorithm, throttle=self.throttle, relpath=relpath)
        os.replace(part, target)
        # the status-change time seen before the copy: a change during it shows next pass
        self._record(relpath, copied.size, copied.mtime_ns, info.st_ctime_ns, copied.digest,
                     str(target), copied=True)
        result.copied_files += 1
        result.copied_bytes += copied.size

    def _record(self, relpath: str, size: int, mtime_ns: int, ctime_ns: int, digest: str,
                staged_path: str, copied: bool) -> None:
        row_id = self.store.record_synced(self.session_id, relpath, size, mtime_ns, ctime_ns,
                                          digest, staged_path, copied)
        self.staged[relpath] = Staged(row_id, size, mtime_ns, ctime_ns, digest, staged_path)


def use_live_copies(config: Config, journal: Journal, user: str, dataset_name: str,
                    source_root: Path, tmp: Path, file_rows) -> list[dict]:
    """Move staged copies of unchanged files into a dataset's tmp copy.

    Returns the verified-file records (for ``Journal.mark_verified``) of the files taken
    over; staged copies of files that changed or vanished are removed. A staged copy is
    used only when the file in ``source_root`` (the dataset in processing/) has the size,
    modification time and status-change time it had when it was staged (and read back).
    """
    store = SessionStore(journal)
    staged = {relpath: row for relpath, row in store.live_files_of_user(user).items()
              if relpath.startswith(f"{dataset_name}/")}
    taken, used = [], []
    for file in file_rows:
        row = staged.pop(f"{dataset_name}/{file.relpath}", None)
        if row is None or file.verified:
            continue
        source = Path(row.staged_path)
        try:
            now = os.stat(source_root / file.relpath)
            same = Staged(row.id, row.size, row.mtime_ns, row.ctime_ns, row.digest,
                          row.staged_path).matches(now) and \
                (file.size, file.mtime_ns) == (now.st_size, now.st_mtime_ns) and \
                source.stat().st_size == file.size
        except OSError:
            same = False
        if same:
            target = tmp / file.relpath
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
            taken.append({"relpath": file.relpath, "digest": row.digest, "size": file.size,
                          "mtime_ns": file.mtime_ns, "copies": 0})
        else:
            source.unlink(missing_ok=True)
        used.append(row.id)
    for row in staged.values():  # synced, then deleted from the dataset before the end
        Path(row.staged_path).unlink(missing_ok=True)
        used.append(row.id)
    store.forget(used)
    return taken


def _utc_from_timestamp(timestamp: float):
    """A file time as aware UTC (what the journal stores)."""
    import datetime as dt

    return dt.datetime.fromtimestamp(timestamp, dt.UTC)


__all__ = ["LiveSync", "Staged", "SyncStep", "staging_root", "use_live_copies"]
