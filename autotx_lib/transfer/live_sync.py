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

A large file still being written (at least ``GROWING_MIN_BYTES``) is staged in ranges as
it grows, each range verified as it is written; once the file is quiet (or the session
ended) its whole staged prefix is hashed again at the source (a writer may rewrite a
header at the end) and only the rest is copied. A prefix that reads differently now is
thrown away and the file copied whole. What a range covers is kept in memory only: after
a restart such a file is copied whole.

When the session ends, the agent makes one last pass without a quiet period (the user
said they are done), so that the final transfer finds everything staged.

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
from typing import Any

from autotx_lib.config import Config
from autotx_lib.errors import SourceChangedError, UnsafePathError, VerificationError
from autotx_lib.journal import Journal
from autotx_lib.journal.instrument_sessions import SessionStore
from autotx_lib.transfer import _platform as P
from autotx_lib.transfer import copy as C
from autotx_lib.transfer.destination import check_destination
from autotx_lib.transfer.layout import check_name
from autotx_lib.transfer.sessions import InstrumentSession

log = logging.getLogger("autotx.live_sync")

GROWING_MIN_BYTES = 32 * 1024 * 1024
"""A file still being written is staged in ranges from this size on (smaller files are
copied whole once quiet)."""
GROWING_STEP_BYTES = 8 * 1024 * 1024
"""... a new range once the file grew this much since the last one."""
CHUNK = 1024 * 1024


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
    growing_bytes: int = 0  # staged of files still being written (ranges)
    completed: int = 0  # files staged while written: only their rest was copied now


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


@dataclass
class _Growing:
    """The staged prefix of a file still being written (kept in memory only)."""

    part: Path  # holds the source's bytes [0, length) as they were read
    length: int
    hasher: Any  # over those bytes


class _Changed(Exception):
    """The source has fewer bytes than when its range was started (truncated meanwhile)."""


def _read_back(fd: int, start: int, end: int, mode: str, algorithm: str) -> str:
    """The digest of a written range as ``mode`` checks it (``storage``: from the disk)."""
    if mode == "storage":  # as copy.py does for whole files: written back, pages dropped
        length = end - start
        if not P.wait_written(fd, start, length):
            P.flush_data(fd)
        P.drop_cache(fd, start, length)
        if P.page_cached(fd, start):  # a network share keeps them until a commit
            P.flush_data(fd)
            P.drop_cache(fd, start, length)
    return _hash_range(fd, start, end, C.new_hasher(algorithm)).hexdigest()


def _hash_range(fd: int, start: int, end: int, hasher: Any) -> Any:
    """Hash bytes [start, end) of an open file into ``hasher``; raises _Changed when short."""
    buf = memoryview(bytearray(CHUNK))
    offset = start
    while offset < end:
        n = P.pread_into(fd, buf[:min(CHUNK, end - offset)], offset)
        if n == 0:
            raise _Changed
        hasher.update(buf[:n])
        offset += n
    return hasher


def _copy_range(src_fd: int, dst_fd: int, start: int, end: int, hasher: Any, mode: str,
                algorithm: str, throttle: C.Throttle | None, part: Path) -> None:
    """Copy the source's bytes [start, end) to the same place in the staged file, hashing
    them into ``hasher``, and check the written range as ``mode`` says.

    Raises _Changed when the source is shorter than ``end`` now, VerificationError when
    the range written reads back differently.
    """
    buf = memoryview(bytearray(CHUNK))
    step = throttle.chunk_size(CHUNK) if throttle is not None else CHUNK
    read = C.new_hasher(algorithm)
    os.lseek(dst_fd, start, os.SEEK_SET)
    offset = start
    while offset < end:
        n = P.pread_into(src_fd, buf[:min(step, end - offset)], offset)
        if n == 0:
            raise _Changed
        chunk = buf[:n]
        hasher.update(chunk)
        read.update(chunk)
        done = 0
        while done < n:
            done += os.write(dst_fd, chunk[done:])
        offset += n
        if throttle is not None:
            throttle.throttle(n)
    if mode != "stream" and end > start:
        stored = _read_back(dst_fd, start, end, mode, algorithm)
        if stored != read.hexdigest():
            raise VerificationError(part, read.hexdigest(), stored)


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
        self._growing: dict[str, _Growing] = {}  # files staged in ranges as they are written

    def session(self) -> InstrumentSession:
        """This sync's session as it is in the journal now (ended or not)."""
        return InstrumentSession.from_row(self.store.session(self.session_id))

    def close(self) -> None:
        """Remove the staged prefixes of files still being written (the sync is given up)."""
        self._drop_growing(list(self._growing))

    def step(self, session, *, now: float | None = None, budget_seconds: float = 2.0,
             should_stop: Callable[[], bool] | None = None) -> SyncStep:
        """One pass over ``incoming/<user>/``; stops after ``budget_seconds`` of copying.

        Staged copies of files that are no longer there (deleted during the session) are
        removed from the staging area. For a session that ended (``session.open`` false)
        this is the last pass: every file is synced whatever its age and the budget, and
        the staged prefixes of files that could not be finished are removed.

        Raises
        ------
        DestinationError
            The destination is not there, not marked (not mounted) or not writable: nothing
            is written anywhere, the next pass tries again.
        """
        started = time.monotonic()
        last = not getattr(session, "open", True)
        # a file must be quiet for live_quiet_seconds: looking more often than twice in
        # that time finds nothing new (but a file being written grows), and a pass over
        # thousands of files is not free
        interval = self.config.sessions.live_quiet_seconds / 2
        if not last and self._walked_at is not None and not self._pending and \
                not self._growing and started - self._walked_at < interval:
            return SyncStep()
        check_destination(self.config.destination, self.journal, self.config.host_alias)
        try:
            return self._walk_and_sync(session, started, now, last,
                                       float("inf") if last else budget_seconds, should_stop)
        finally:
            if last:
                self._drop_growing(list(self._growing))

    def _walk_and_sync(self, session, started: float, now: float | None, last: bool,
                       budget_seconds: float, should_stop: Callable[[], bool] | None
                       ) -> SyncStep:
        now = time.time() if now is None else now
        quiet = 0.0 if last else self.config.sessions.live_quiet_seconds
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
            fresh = now - changed < quiet
            if fresh:
                result.waiting += 1  # still being written: next pass (large: a range now)
            if known is None and not _safe(relpath):
                continue  # a name the claim will quarantine
            if result.interrupted or time.monotonic() - started > budget_seconds or \
                    (should_stop is not None and should_stop()):
                result.interrupted = not fresh or result.interrupted
                continue
            try:
                if fresh:
                    self._grow(root, relpath, info, result)
                else:
                    self._sync_file(root, relpath, info, known, result)
            except SourceChangedError as error:  # written to again: a later pass (or the claim)
                log.info("live sync: %s", error)
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
        self._drop_growing([relpath for relpath in self._growing if relpath not in seen])

    def _drop_growing(self, relpaths: list[str]) -> None:
        for relpath in relpaths:
            self._growing.pop(relpath).part.unlink(missing_ok=True)

    def _part(self, relpath: str) -> Path:
        target = staging_root(self.config, self.session_id) / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        return target.with_name(target.name + ".part")

    def _grow(self, root: Path, relpath: str, info: os.stat_result, result: SyncStep) -> None:
        """Stage the bytes a large file still being written gained since its last range."""
        growing = self._growing.get(relpath)
        have = growing.length if growing is not None else 0
        if info.st_size < GROWING_MIN_BYTES or info.st_size - have < GROWING_STEP_BYTES:
            return
        if growing is None:
            growing = _Growing(self._part(relpath), 0, C.new_hasher(self.config.verify.algorithm))
        hasher = growing.hasher.copy()  # kept only once the range is written and checked
        try:
            src_fd = os.open(root / relpath, os.O_RDONLY)
        except OSError:
            return  # gone meanwhile: the next pass sees it
        try:
            flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0)
            dst_fd = os.open(growing.part, flags, 0o644)
            try:
                os.ftruncate(dst_fd, have)  # a range cut short earlier is written again
                self._copy(src_fd, dst_fd, have, info.st_size, hasher, growing.part)
            finally:
                os.close(dst_fd)
        except (_Changed, VerificationError) as error:  # truncated, or a bad write: start over
            log.info("live sync: %s is staged again from its start (%s)", relpath,
                     str(error) or "it shrank")
            self._growing[relpath] = growing
            self._drop_growing([relpath])
            return
        finally:
            os.close(src_fd)
        self._growing[relpath] = _Growing(growing.part, info.st_size, hasher)
        result.growing_bytes += info.st_size - have

    def _copy(self, src_fd: int, dst_fd: int, start: int, end: int, hasher: Any,
              part: Path) -> None:
        _copy_range(src_fd, dst_fd, start, end, hasher, C.verify_mode(self.config.verify.mode),
                    self.config.verify.algorithm, self.throttle, part)

    def _complete(self, source: Path, growing: _Growing) -> tuple[C.CopiedFile, int] | None:
        """Finish a file staged while it was written: copy only what was added since.

        Its staged prefix is hashed again at the source first (a writer may rewrite a header
        when it closes the file). Returns the copied file and its status-change time, or
        None when the prefix reads differently now or the file changed meanwhile.
        """
        try:
            src_fd = os.open(source, os.O_RDONLY)
        except OSError:
            return None  # the whole copy says why
        try:
            before = os.fstat(src_fd)
            if before.st_size < growing.length:
                return None
            hasher = _hash_range(src_fd, 0, growing.length,
                                 C.new_hasher(self.config.verify.algorithm))
            if hasher.hexdigest() != growing.hasher.hexdigest():
                return None
            dst_fd = os.open(growing.part, os.O_RDWR | getattr(os, "O_BINARY", 0))
            try:
                os.ftruncate(dst_fd, growing.length)
                self._copy(src_fd, dst_fd, growing.length, before.st_size, hasher, growing.part)
            finally:
                os.close(dst_fd)
            after = os.stat(source)
        except (_Changed, VerificationError, OSError):
            return None  # copied whole instead (which reports a real I/O problem)
        finally:
            os.close(src_fd)
        if (after.st_size, after.st_mtime_ns, after.st_ctime_ns) != \
                (before.st_size, before.st_mtime_ns, before.st_ctime_ns):
            return None
        return C.CopiedFile(source.name, before.st_size, before.st_mtime_ns,
                            hasher.hexdigest(), 1), before.st_ctime_ns

    def _sync_file(self, root: Path, relpath: str, info: os.stat_result, known: Staged | None,
                   result: SyncStep) -> None:
        algorithm = self.config.verify.algorithm
        source = root / relpath
        target = staging_root(self.config, self.session_id) / relpath
        growing = self._growing.get(relpath)
        finished = self._complete(source, growing) if growing is not None else None
        self._growing.pop(relpath, None)  # (kept when interrupted: a later pass finishes it)
        if finished is not None:
            copied, ctime_ns = finished
            os.replace(growing.part, target)
            self._record(relpath, copied.size, copied.mtime_ns, ctime_ns, copied.digest,
                         str(target), copied=True)
            result.completed += 1
            result.copied_files += 1
            result.copied_bytes += copied.size - growing.length
            return
        if known is not None and known.size == info.st_size and \
                Path(known.staged_path).is_file() and \
                C.hash_file(source, algorithm) == known.digest:  # touched, not changed
            self._record(relpath, info.st_size, info.st_mtime_ns, info.st_ctime_ns,
                         known.digest, known.staged_path, copied=False)
            result.unchanged_by_hash += 1
            return
        part = self._part(relpath)
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
