"""Verified, parallel copy of a dataset; streaming hash; manifest.

Each file is read once, through a buffer (never mapped: a source truncated meanwhile must
not kill the agent with SIGBUS), hashed while it is read, and written to the destination's
temporary area; the source is stat'ed before and after, so a file that changed while it
was copied is copied again. Then the written file is checked, by ``verify`` mode:

``storage`` (default; ``readback`` is its old name)
    write the file back to the storage and wait for it (``sync_file_range``; ``fdatasync``
    where pages stay cached, as on a network share), drop its cached pages
    (``posix_fadvise(DONTNEED)``) and read it back through a new descriptor: the bytes come
    from the disk, or from the server on a share. Proves what the storage holds. Large
    files are read back range by range while the rest is still being copied; small files
    a batch at a time, so that the disk's writes and reads overlap.
``cache``
    re-read the file through the descriptor that wrote it, i.e. from this machine's page
    cache. Proves the copy logic (every byte written where it belongs), not the storage.
``stream``
    no second read: trust the hash computed while writing.

Durability stays cheap: instead of one fsync per file, the caller syncs the destination's
filesystem once (:func:`sync_filesystem`) before the rename that makes the dataset visible.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from autotx_lib.errors import (
    DestinationError,
    DestinationFullError,
    SourceChangedError,
    UnreadableFileError,
    UnsafePathError,
    VerificationError,
)
from autotx_lib.transfer import _platform as P
from autotx_lib.transfer.layout import SourceFile, fsync_dir

BUFFER_SIZE = 256 * 1024  # fits a core's L2 cache: read, hash and write find it there
LARGE_FILE = 1024 * 1024  # from this size on a file travels alone, its writeback started early
WRITEBACK_STEP = 8 * 1024 * 1024  # large files: start writing back every this many bytes

VERIFY_MODES = ("storage", "cache", "stream")
VERIFY_ALIASES = {"readback": "storage"}  # the name of the default before 'cache' existed

# algorithm -> manifest suffix, and the standard tool that checks it
MANIFEST_SUFFIX = {"xxh3_128": "xxh128", "blake3": "b3", "sha256": "sha256", "md5": "md5"}
CHECK_TOOL = {"xxh3_128": "xxhsum -c", "blake3": "b3sum -c", "sha256": "sha256sum -c",
              "md5": "md5sum -c"}
MANIFEST_STEM = "autotx-manifest"


class Throttle(Protocol):
    """What the copy asks between chunks (the resource gate implements it)."""

    def throttle(self, copied: int) -> None:
        """Block while paused or over the bandwidth cap; raise to abort the copy."""

    def chunk_size(self, default: int) -> int:
        """The chunk size to use (smaller under a bandwidth cap)."""


def verify_mode(mode: str) -> str:
    """The canonical name of a verification mode (``readback`` -> ``storage``).

    Raises
    ------
    ValueError
        For an unknown mode; the message lists the known ones.
    """
    mode = VERIFY_ALIASES.get(mode, mode)
    if mode not in VERIFY_MODES:
        raise ValueError(f"unknown verify mode {mode!r}; use one of {', '.join(VERIFY_MODES)}")
    return mode


def new_hasher(algorithm: str):
    """A fresh incremental hasher with ``update()`` and ``hexdigest()``."""
    if algorithm == "xxh3_128":
        import xxhash

        return xxhash.xxh3_128()
    if algorithm == "blake3":
        import blake3

        return blake3.blake3()
    if algorithm in {"sha256", "md5"}:
        return hashlib.new(algorithm)
    raise ValueError(f"unknown hash algorithm {algorithm!r}; use one of {sorted(MANIFEST_SUFFIX)}")


_local = threading.local()


def _buffer() -> memoryview:
    buf = getattr(_local, "buffer", None)
    if buf is None:
        buf = _local.buffer = memoryview(bytearray(BUFFER_SIZE))
    return buf


def _hash_fd(fd: int, algorithm: str) -> str:
    """Hash an open file from its start, through reads (a file shrinking meanwhile is safe)."""
    hasher = new_hasher(algorithm)
    buf = _buffer()
    offset = 0
    while n := P.pread_into(fd, buf, offset):
        hasher.update(buf[:n])
        offset += n
    return hasher.hexdigest()


def _start_writeback(fd: int, offset: int = 0, length: int = 0) -> None:
    """Ask the kernel to start writing a file's dirty pages now, without waiting (Linux).

    The final sync (or the flush of ``storage`` verification) then finds most of the data
    already on its way to disk, so the disk works while the next bytes are copied.
    """
    P.start_writeback(fd, offset, length)


def drop_cached_pages(fd: int, offset: int = 0, length: int = 0) -> None:
    """Drop a flushed file's pages from the page cache, so the next read goes to the storage.

    Uses ``posix_fadvise(POSIX_FADV_DONTNEED)`` (``length`` 0: to the end of the file);
    where that does not exist (Windows, macOS) it does nothing, and a read-back may then be
    served from the cache.
    """
    P.drop_cache(fd, offset, length)


def _flush(fd: int) -> None:
    """Wait until a file's data is on the storage (committed to the server on a share)."""
    try:
        P.flush_data(fd)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.ENOTSUP):  # a filesystem without sync
            raise


def _wait_written(fd: int, offset: int, length: int) -> bool:
    """Write a range of a file back and wait for it (Linux); False where that is unknown."""
    return P.wait_written(fd, offset, length)


def _still_cached(fd: int, offset: int) -> bool:
    """Whether the page at ``offset`` is still in the page cache (True when unknown)."""
    return P.page_cached(fd, offset)


def _onto_storage_out_of_cache(fd: int, size: int) -> None:
    """Get a file's data onto the storage and its pages out of the cache, cheaply.

    On Linux the data is written back and waited for (sync_file_range: no journal commit
    per file; the caller's final sync makes the metadata durable). Where that is not
    available, or the pages stay cached (a network filesystem keeps them until a commit),
    the file is flushed with fdatasync, which commits it to the server, and dropped again.
    """
    if not _wait_written(fd, 0, 0):
        _flush(fd)
    drop_cached_pages(fd)
    if size and _still_cached(fd, 0):
        _flush(fd)
        drop_cached_pages(fd)


class _StoredReadback:
    """Reads a large file back from the storage while the rest of it is still being copied.

    Each range whose writeback has finished is dropped from the cache and read (Linux, and
    only where the drop is seen to work: not for pages a network filesystem still holds
    for its commit); the rest after the final flush (:meth:`finish`). Disk writes and
    read-backs overlap instead of following each other.
    """

    def __init__(self, path: str | Path, algorithm: str):
        self.path = path
        try:
            self.fd = os.open(path, os.O_RDONLY)
        except OSError as error:
            raise _destination_error(error, path) from None
        self.hasher = new_hasher(algorithm)
        self.checked = 0  # bytes read back and hashed so far
        self.pipelined = True

    def behind(self, dst_fd: int, end: int) -> None:
        """Read back ``[checked, end)`` once it is written back (a range kicked earlier)."""
        length = end - self.checked
        if not self.pipelined or length <= 0:
            return
        if not _wait_written(dst_fd, self.checked, length):
            self.pipelined = False
            return
        drop_cached_pages(self.fd, self.checked, length)
        if _still_cached(self.fd, self.checked):
            self.pipelined = False  # finish() reads it after the flush
            return
        try:
            self._read(end)
        except OSError as error:  # the destination's error, not the source's
            raise _destination_error(error, self.path) from None

    def finish(self, dst_fd: int) -> str:
        """Write back the whole file, drop its pages, read back what is left; the digest."""
        _onto_storage_out_of_cache(dst_fd, os.fstat(dst_fd).st_size)
        self._read(None)
        return self.hasher.hexdigest()

    def _read(self, end: int | None) -> None:
        buf = _buffer()
        while end is None or self.checked < end:
            want = len(buf) if end is None else min(len(buf), end - self.checked)
            n = P.pread_into(self.fd, buf[:want], self.checked)
            if n == 0:
                return
            self.hasher.update(buf[:n])
            self.checked += n

    def close(self) -> None:
        os.close(self.fd)


def hash_stored_files(paths: Sequence[str | Path], algorithm: str) -> list[str]:
    """Hash files as the storage holds them, not as this machine's page cache does.

    Each file is opened anew, written back (and waited for), its cached pages dropped
    (:func:`drop_cached_pages`), and read back: from the disk, or from the server on a
    network share. Small files are prefetched together so that their reads overlap.

    Parameters
    ----------
    paths : sequence of str or Path
        Files just written (their flush is part of the check).
    algorithm : str
        ``xxh3_128``, ``blake3``, ``sha256`` or ``md5``.

    Returns
    -------
    digests : list of str
        One hex digest per path, in order.

    Raises
    ------
    DestinationError, DestinationFullError
        A file cannot be opened, flushed or read (e.g. EIO, no space for delayed blocks).
    """
    opened: list[tuple[str | Path, int]] = []
    path: str | Path = ""
    try:
        for path in paths:
            opened.append((path, os.open(path, os.O_RDONLY)))
            _start_writeback(opened[-1][1])  # every file on its way to the disk at once
        for path, fd in opened:  # noqa: B007 - path names the file in the error below
            _onto_storage_out_of_cache(fd, os.fstat(fd).st_size)
        for path, fd in opened:  # noqa: B007 - path names the file in the error below
            _advise_read(fd)
        digests = []
        for path, fd in opened:  # noqa: B007 - path names the file in the error below
            digests.append(_hash_fd(fd, algorithm))
        return digests
    except OSError as error:
        raise _destination_error(error, path) from None
    finally:
        for _, fd in opened:
            os.close(fd)


def _advise_read(fd: int) -> None:
    """Small files: start reading now (the batch's reads overlap); large: read ahead more."""
    P.will_need(fd, small=os.fstat(fd).st_size < LARGE_FILE)


def hash_stored_file(path: Path, algorithm: str) -> str:
    """Hash one file as the storage holds it (see :func:`hash_stored_files`)."""
    return hash_stored_files([path], algorithm)[0]


def hash_file(path: Path, algorithm: str) -> str:
    """Hash a whole file (as this machine reads it, page cache included); the hex digest."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return _hash_fd(fd, algorithm)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class CopiedFile:
    """A file copied and verified: its size and mtime when read, its digest, copy count."""

    relpath: str
    size: int
    mtime_ns: int
    digest: str
    copies: int


def _destination_error(error: OSError, destination: str | Path) -> DestinationError:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return DestinationFullError(destination)
    return DestinationError(destination, f"{error.strerror or error} ({error.filename or ''})")


def _stream(src_fd: int, dst_fds: Sequence[int], hasher,
            on_bytes: Callable[[int], None] | None, limit: int, throttle: Throttle | None = None,
            readbacks: Sequence[_StoredReadback | None] = ()) -> int:
    """Copy at most ``limit`` bytes through a buffer, hashing them (a growing file cannot
    keep the copy going forever: the caller notices the growth and copies again).

    Each chunk is read and hashed once and written to every descriptor of ``dst_fds``
    (several destinations). A large file's writeback is started every
    :data:`WRITEBACK_STEP` bytes, so the disk writes while the rest is read and hashed;
    ``readbacks`` (one per descriptor, or none) read back the range started one step earlier.
    """
    buf = _buffer()
    step = throttle.chunk_size(len(buf)) if throttle is not None else len(buf)
    total = kicked = 0
    while total < limit:
        n = P.read_into(src_fd, buf[:min(step, limit - total)])
        if n == 0:
            break
        chunk = buf[:n]
        hasher.update(chunk)
        for index, dst_fd in enumerate(dst_fds):
            written = 0
            try:
                while written < n:
                    written += os.write(dst_fd, chunk[written:])
            except OSError as error:
                error.destination_index = index  # type: ignore[attr-defined] - see _attempt
                raise
        total += n
        if limit >= LARGE_FILE and total - kicked >= WRITEBACK_STEP:
            for dst_fd, readback in zip(dst_fds, readbacks or [None] * len(dst_fds), strict=True):
                _start_writeback(dst_fd, kicked, total - kicked)
                if readback is not None:
                    readback.behind(dst_fd, kicked)
            kicked = total
        if on_bytes is not None:
            on_bytes(n)
        if throttle is not None:
            throttle.throttle(n)
    if total > kicked and limit >= LARGE_FILE:
        for dst_fd in dst_fds:
            _start_writeback(dst_fd, kicked, total - kicked)
    return total


@dataclass(frozen=True)
class _Copy:
    """A file copied while its source held still: what was read, and the copies it took."""

    size: int
    mtime_ns: int
    digest: str
    copies: int


def _attempt(src: str | Path, dsts: Sequence[str | Path], algorithm: str, mode: str,
             on_bytes: Callable[[int], None] | None, throttle: Throttle | None
             ) -> tuple[_Copy, list[str | None]] | None:
    """Copy one file once to every path of ``dsts``: (what was read, the read-back digests).

    A read-back digest is None where nothing was read back. Returns None when the source
    changed while it was copied. ``cache`` mode re-reads each destination through the
    descriptor it was written with (mostly the page cache); ``storage`` mode reads a large
    file back from the storage (:class:`_StoredReadback`), while small files are read back
    by the caller, a batch at a time.
    """
    try:
        src_fd = os.open(src, os.O_RDONLY)
    except OSError as error:
        raise UnreadableFileError(src, error.strerror or str(error)) from None
    try:
        before = os.fstat(src_fd)
        with contextlib.ExitStack() as stack:
            dst_fds = [_open_destination_file(stack, dst, mode) for dst in dsts]
            readbacks: list[_StoredReadback | None] = [None] * len(dsts)
            if mode == "storage" and before.st_size >= LARGE_FILE:
                readbacks = [stack.enter_context(contextlib.closing(_StoredReadback(dst, algorithm)))
                             for dst in dsts]
            hasher = new_hasher(algorithm)
            try:
                copied = _stream(src_fd, dst_fds, hasher, on_bytes, before.st_size, throttle,
                                 readbacks)
            except OSError as error:
                if error.filename is None and error.errno in (errno.EIO,):
                    raise UnreadableFileError(src, error.strerror) from None
                index = getattr(error, "destination_index", None)
                if index is not None:  # a write failed: that destination's trouble
                    raise _destination_error(error, dsts[index]) from None
                raise _classify_stream_error(error, src, dsts[0]) from None
            after = os.stat(src)
            if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns) \
                    or copied != after.st_size:
                return None
            written: list[str | None] = []
            for dst, dst_fd, readback in zip(dsts, dst_fds, readbacks, strict=True):
                try:
                    written.append(_hash_fd(dst_fd, algorithm) if mode == "cache" else
                                   readback.finish(dst_fd) if readback is not None else None)
                except OSError as error:
                    raise _destination_error(error, dst) from None
            return _Copy(copied, before.st_mtime_ns, hasher.hexdigest(), 1), written
    finally:
        os.close(src_fd)


def _open_destination_file(stack: contextlib.ExitStack, dst: str | Path, mode: str) -> int:
    """Open (create, truncate) one destination file; closed when ``stack`` closes."""
    flags = (os.O_RDWR if mode == "cache" else os.O_WRONLY) | os.O_CREAT | os.O_TRUNC
    try:
        fd = os.open(dst, flags, 0o644)
    except OSError as error:
        raise _destination_error(error, dst) from None
    stack.callback(os.close, fd)
    return fd


def _classify_stream_error(error: OSError, src: str | Path, dst: str | Path) -> Exception:
    if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM):
        return _destination_error(error, dst)
    return UnreadableFileError(src, error.strerror or str(error))


def _copy_settled(src: str | Path, dsts: Sequence[str | Path], algorithm: str, mode: str,
                  on_bytes: Callable[[int], None] | None, max_attempts: int,
                  throttle: Throttle | None) -> _Copy:
    """Copy until one copy saw the source hold still and, if it was read back, read back equal
    at every destination.

    Small files of ``storage`` mode are not read back here (see :func:`_needs_stored_check`).
    """
    mismatches = 0
    for attempt in range(1, max_attempts + 1):
        outcome = _attempt(src, dsts, algorithm, mode, on_bytes, throttle)
        if outcome is None:
            continue  # the source changed while it was read: copy it again
        copied, written = outcome
        wrong = [(dst, digest) for dst, digest in zip(dsts, written, strict=True)
                 if digest is not None and digest != copied.digest]
        if wrong:
            mismatches += 1
            if mismatches >= 2:
                raise VerificationError(wrong[0][0], copied.digest, wrong[0][1])
            continue
        return _Copy(copied.size, copied.mtime_ns, copied.digest, attempt)
    raise SourceChangedError(src, max_attempts)


def _needs_stored_check(mode: str, copied: _Copy) -> bool:
    """A small file of ``storage`` mode: written, not yet read back (large ones were)."""
    return mode == "storage" and copied.size < LARGE_FILE


def _check_stored(copied: _Copy, stored: Sequence[str], dsts: Sequence[str | Path], algorithm: str,
                  copy_again: Callable[[], _Copy]) -> _Copy:
    """Accept a copy whose stored bytes hash as the source did at every destination; else
    copy once more.

    Raises VerificationError when a stored file differs twice in a row.
    """
    if all(digest == copied.digest for digest in stored):
        return copied
    again = copy_again()
    for dst, digest in zip(dsts, hash_stored_files(list(dsts), algorithm), strict=True):
        if digest != again.digest:
            raise VerificationError(dst, again.digest, digest)
    return _Copy(again.size, again.mtime_ns, again.digest, copied.copies + again.copies)


def copy_file(src: Path, dst: Path | Sequence[Path], algorithm: str, *, verify: str = "storage",
              on_bytes: Callable[[int], None] | None = None, max_attempts: int = 3,
              relpath: str = "", throttle: Throttle | None = None) -> CopiedFile:
    """Copy one file, hashing while reading; verify; re-copy if the source changed meanwhile.

    Parameters
    ----------
    src : Path
        Source file.
    dst : Path or sequence of Path
        Destination file (its folder must exist; an existing file is replaced), or several:
        the source is then read and hashed once, written to each and each is verified.
    algorithm : str
        ``xxh3_128``, ``blake3``, ``sha256`` or ``md5``.
    verify : str
        ``storage`` (default: read back what the storage holds), ``cache`` (read back
        through the page cache) or ``stream`` (no read-back); see the module docstring.
    on_bytes : callable, optional
        Called with each number of bytes copied (progress).
    max_attempts : int
        Copies of a changing source before giving up.
    throttle : Throttle, optional
        Called after each chunk; may block (paused, bandwidth cap) or raise (stalled).

    Returns
    -------
    copied : CopiedFile

    Raises
    ------
    UnreadableFileError
        The source cannot be read.
    DestinationError, DestinationFullError
        The destination cannot be written (missing, read-only, full).
    SourceChangedError
        The source changed during every attempt.
    VerificationError
        The read-back file differs from what was read (twice in a row).

    Examples
    --------
    >>> copy_file(Path("in/a.tif"), Path("out/a.tif"), "xxh3_128")  # doctest: +SKIP
    CopiedFile(relpath='a.tif', size=1048576, mtime_ns=..., digest='5f0e...', copies=1)
    """
    mode = verify_mode(verify)
    dsts = _paths(dst)

    def copy() -> _Copy:
        return _copy_settled(src, dsts, algorithm, mode, on_bytes, max_attempts, throttle)

    copied = copy()
    if _needs_stored_check(mode, copied):
        copied = _check_stored(copied, hash_stored_files(dsts, algorithm), dsts, algorithm, copy)
    return CopiedFile(relpath or src.name, copied.size, copied.mtime_ns, copied.digest,
                      copied.copies)


def _paths(paths: Path | Sequence[Path]) -> list[Path]:
    """One destination path or several, as a non-empty list."""
    listed = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    if not listed:
        raise ValueError("no destination given: name at least one")
    return [Path(p) for p in listed]


BATCH_FILES = 96  # at most; fewer with many workers (_batch_files)
# Uncapped, a batch holds up to 3 MiB: more writes and read-backs in flight per thread
# (5,000 x 32 KiB in ``storage`` mode: 5 % less time, 18 % less CPU than with 32 files /
# 1 MiB, medians of 9 interleaved pairs on 2 busy cores). Under a bandwidth cap it holds what the cap lets through in about 0.1 s (Throttle.chunk_size),
# so that a stop still waits for little more than the batches under way.
BATCH_BYTES = 3 * 1024 * 1024


def _batch_files(open_at_once: int) -> int:
    """Files per batch when ``open_at_once`` files of each batch are open together (a
    ``storage`` check opens each copy of a whole batch: workers x destinations).

    All batches together stay within half the process's limit of open files (macOS allows
    256 by default, Windows' C runtime 512), however many workers are configured.
    """
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):  # Windows: no resource module
        limit = 512
    if limit < 0:  # RLIM_INFINITY
        limit = 1 << 20
    return max(1, min(BATCH_FILES, limit // 2 // max(1, open_at_once)))


def _batches(files: Iterable[SourceFile], batch_bytes: Callable[[], int] = lambda: BATCH_BYTES,
             batch_files: int = BATCH_FILES) -> Iterator[list[SourceFile]]:
    """Group small files into tasks (a large file is a task of its own).

    One task per small file costs more in thread hand-offs than the copy itself: with
    thousands of 32 kB files the threads spent their time waking each other. Each batch
    is made when it is needed, at most ``batch_bytes()`` bytes (asked anew for each batch:
    a bandwidth cap may change during the copy).
    """
    current: list[SourceFile] = []
    size, limit = 0, batch_bytes()
    for entry in files:
        if entry.size >= LARGE_FILE:
            yield [entry]
            continue
        if current and (len(current) >= batch_files or size + entry.size > limit):
            yield current
            current, size, limit = [], 0, batch_bytes()
        current.append(entry)
        size += entry.size
    if current:
        yield current


@dataclass(frozen=True)
class _Job:
    """How every file of one copy_files call is copied (shared by its tasks)."""

    src_root: str
    dst_roots: tuple[str, ...]
    algorithm: str
    verify: str
    on_bytes: Callable[[int], None] | None
    max_attempts: int
    throttle: Throttle | None

    def copy_step(self, relpath: str, targets: list[str]) -> Callable[[], _Copy]:
        """Copy one file to ``targets`` until its source held still (no ``storage`` check)."""
        return lambda: _copy_settled(os.path.join(self.src_root, relpath), targets,
                                     self.algorithm, self.verify, self.on_bytes,
                                     self.max_attempts, self.throttle)

    def targets(self, relpath: str) -> list[str]:
        """Where one file goes: its path under every destination root.

        Strings, not Path objects: with thousands of small files, building paths cost
        more than the system calls of their copy.
        """
        return [os.path.join(root, relpath) for root in self.dst_roots]


def _copy_batch(batch: list[SourceFile], job: _Job
                ) -> tuple[list[CopiedFile], BaseException | None]:
    """Copy a batch in order; returns what was copied and verified, and the error that stopped it.

    In ``storage`` mode the whole batch is written first and then checked as stored: the
    flushes of its files overlap instead of waiting for the disk one file at a time.
    """
    done: list[CopiedFile] = []
    if job.verify != "storage":
        for entry in batch:
            try:
                copied = job.copy_step(entry.relpath, job.targets(entry.relpath))()
            except BaseException as error:  # noqa: BLE001 - handed to the caller, who raises it
                return done, error
            done.append(CopiedFile(entry.relpath, copied.size, copied.mtime_ns, copied.digest,
                                   copied.copies))
        return done, None
    written: list[tuple[SourceFile, _Copy, list[Path]]] = []
    failure: BaseException | None = None
    for entry in batch:
        targets = job.targets(entry.relpath)  # built once: paths cost more than the syscalls
        try:
            copied = job.copy_step(entry.relpath, targets)()
        except BaseException as error:  # noqa: BLE001 - what was written is still checked
            failure = error
            break
        if _needs_stored_check(job.verify, copied):
            written.append((entry, copied, targets))
        else:  # a large file, read back from the storage while it was copied
            done.append(CopiedFile(entry.relpath, copied.size, copied.mtime_ns, copied.digest,
                                   copied.copies))
    try:
        roots = len(job.dst_roots)
        every = [target for _, _, targets in written for target in targets]
        stored = hash_stored_files(every, job.algorithm)
        for number, (entry, copied, targets) in enumerate(written):
            mine = slice(number * roots, (number + 1) * roots)
            copied = _check_stored(copied, stored[mine], targets, job.algorithm,
                                   job.copy_step(entry.relpath, targets))
            done.append(CopiedFile(entry.relpath, copied.size, copied.mtime_ns, copied.digest,
                                   copied.copies))
    except BaseException as error:  # noqa: BLE001 - handed to the caller, who raises it
        failure = failure or error
    return done, failure


def copy_files(files: Iterable[SourceFile], src_root: Path, dst_root: Path | Sequence[Path],
               algorithm: str, *,
               workers: int = 4, verify: str = "storage", max_attempts: int = 3,
               on_file: Callable[[CopiedFile], None] | None = None,
               on_bytes: Callable[[int], None] | None = None,
               should_stop: Callable[[], bool] | None = None,
               tick: Callable[[], None] | None = None,
               throttle: Throttle | None = None) -> list[CopiedFile]:
    """Copy many files of one dataset in parallel; returns what was copied and verified.

    ``verify`` is a mode of :func:`copy_file` (default ``storage``). ``on_file`` is called
    in the calling thread for each verified file (e.g. to record it in the journal);
    ``tick`` about twice a second (live progress). ``should_stop`` returning True stops
    starting new files; files under way finish. Small files travel in batches (up to 96
    files or 3 MiB a task, less under a bandwidth cap).

    ``dst_root`` may be several folders (several destinations): each file is then read and
    hashed once, written under every root, and verified at each; a file counts as verified
    only when every copy is.

    The first error stops the copy and is raised after the running tasks finish; what was
    verified before it is still reported through ``on_file``.
    """
    mode = verify_mode(verify)
    todo = list(files)
    roots = tuple(_paths(dst_root))
    # os.path, not pathlib: 5,000 Path objects cost a tenth of a second of the copy.
    # A top-level file's folder is "": the root itself, made too when it is missing.
    folders = sorted({os.path.dirname(f.relpath) for f in todo})
    for root in roots:
        try:
            for folder in folders:
                (root / folder).mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise _destination_error(error, root) from None
    job = _Job(os.fspath(src_root), tuple(map(os.fspath, roots)), algorithm, mode, on_bytes,
               max_attempts, throttle)
    results: list[CopiedFile] = []
    pending: set[Future] = set()
    first_error: BaseException | None = None
    queue = _batches(todo, lambda: BATCH_BYTES if throttle is None
                     else throttle.chunk_size(BATCH_BYTES),
                     _batch_files(workers * 2 * len(roots)))  # workers x 2 batches queued
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="autotx-copy") as pool:
        def submit_next() -> bool:
            if first_error is not None or (should_stop is not None and should_stop()):
                return False
            batch = next(queue, None)
            if batch is None:
                return False
            pending.add(pool.submit(_copy_batch, batch, job))
            return True

        while len(pending) < workers * 2 and submit_next():
            pass
        while pending:
            finished, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            for future in finished:
                pending.discard(future)
                done, error = future.result()
                first_error = first_error or error
                results.extend(done)
                if on_file is not None:
                    for result in done:
                        on_file(result)
                submit_next()
            if tick is not None:
                tick()
    if first_error is not None:
        raise first_error
    return results


def sync_filesystem(path: Path) -> None:
    """Flush everything written to the filesystem holding ``path`` (syncfs; sync as fallback).

    One call replaces an fsync per file: the cheap way to make a whole dataset durable.
    """
    P.sync_filesystem(path)


# --- manifests -----------------------------------------------------------------------


def manifest_name(algorithm: str, taken: Iterable[str] = ()) -> str:
    """The manifest's file name: ``autotx-manifest.xxh128``, or ``autotx-manifest-1.xxh128``
    (``-2`` ...) when a dataset file in ``taken`` has that name or its temporary name.

    The name depends only on the algorithm and the dataset's files, so every attempt at
    sealing a dataset writes the same one.
    """
    taken = set(taken)
    suffix = MANIFEST_SUFFIX[algorithm]
    name, number = f"{MANIFEST_STEM}.{suffix}", 0
    while name in taken or _manifest_tmp_name(name) in taken:
        number += 1
        name = f"{MANIFEST_STEM}-{number}.{suffix}"
    return name


def _manifest_tmp_name(name: str) -> str:
    return f".{name}.tmp"


_MANIFEST_PATTERN = re.compile(
    rf"^\.?{MANIFEST_STEM}(-\d+)?\.({'|'.join(MANIFEST_SUFFIX.values())})(\.tmp)?$")


def _manifest_line(digest: str, relpath: str) -> str:
    # Names go in as they are, backslashes included: GNU-style escaping (a leading
    # backslash, doubled backslashes) is read by sha256sum and b3sum but skipped by
    # xxhsum 0.8 as "improperly formatted", with exit status 0. Unescaped lines are read
    # alike by all four tools; only a line break cannot be written this way.
    if "\n" in relpath or "\r" in relpath:
        raise UnsafePathError(relpath, "a line break in a file name cannot be written to a "
                              "checksum manifest; rename the file")
    return f"{digest}  {relpath}\n"


def manifest_content(entries: Iterable[tuple[str, str]], algorithm: str,
                     taken: Iterable[str] = ()) -> tuple[str, bytes]:
    """The manifest's name and bytes for ``(relpath, digest)`` entries (see
    :func:`write_manifest`); for destinations written through the protocol."""
    name, text, _ = _manifest(entries, algorithm, taken)
    return name, text


def _manifest(entries: Iterable[tuple[str, str]], algorithm: str, taken: Iterable[str]
              ) -> tuple[str, bytes, set[str]]:
    """The manifest's name and bytes, and the names it must not take (built once)."""
    entries = sorted(entries)
    names = {relpath for relpath, _ in entries}
    names.update(taken)
    name = manifest_name(algorithm, names)
    return name, "".join([_manifest_line(d, r) for r, d in entries]).encode("utf-8"), names


def write_manifest(folder: Path, entries: Iterable[tuple[str, str]], algorithm: str,
                   taken: Iterable[str] | None = None) -> Path:
    """Write the dataset's one manifest of ``<digest>  <relpath>`` lines into ``folder``.

    ``cd folder && xxhsum -c autotx-manifest.xxh128`` (or ``b3sum -c``, ``sha256sum -c``,
    ``md5sum -c``) checks every file. The manifest is written whole to a temporary name,
    flushed, and renamed over any earlier (perhaps torn) one, so a crash or a full disk
    never leaves a partial manifest under the final name; writing it again (a retry)
    replaces it, and other manifests of ours left in ``folder`` are removed.

    Parameters
    ----------
    folder : Path
        The dataset's top folder.
    entries : iterable of (relpath, digest)
        Every file of the dataset.
    algorithm : str
        The algorithm the digests were made with.
    taken : iterable of str, optional
        More names of dataset files (the entries' names always count): a dataset file
        with the manifest's name is never replaced; the manifest takes a suffix instead.

    Returns
    -------
    path : Path
        The manifest.

    Raises
    ------
    DestinationError, DestinationFullError
        It cannot be written (the final name then holds the previous version, if any).
    UnsafePathError
        A file name holds a line break (:func:`~autotx_lib.transfer.layout.check_name`
        refuses those when a dataset is listed).
    """
    name, text, names = _manifest(entries, algorithm, taken or ())
    path, tmp = folder / name, folder / _manifest_tmp_name(name)
    try:
        _write_durably(tmp, text)
        os.replace(tmp, path)
        fsync_dir(folder)
    except OSError as error:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise _destination_error(error, path) from None
    for stale in os.listdir(folder):  # e.g. autotx-manifest-1.md5 from an older version
        if stale != name and stale not in names and _MANIFEST_PATTERN.match(stale):
            with contextlib.suppress(OSError):
                os.unlink(folder / stale)
    return path


def _write_durably(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def read_manifest(path: Path) -> list[tuple[str, str]]:
    """Parse a manifest into ``(relpath, digest)`` pairs.

    Reads GNU-escaped lines too (a leading backslash), which earlier versions wrote for
    names with a backslash.
    """
    pairs = []
    for line in path.read_text(encoding="utf-8").split("\n"):  # names may hold U+2028
        if not line:
            continue
        escaped = line.startswith("\\")
        if escaped:
            line = line[1:]
        digest, relpath = line.split("  ", 1)
        if escaped:
            relpath = relpath.replace("\\\\", "\\")
        pairs.append((relpath, digest))
    return pairs


def verify_manifest(folder: Path, manifest: Path, algorithm: str) -> list[str]:
    """Re-hash every file the manifest lists; return the problems (empty: all verified)."""
    problems = []
    for relpath, digest in read_manifest(manifest):
        target = folder / relpath
        if not target.is_file():
            problems.append(f"{relpath}: missing")
            continue
        actual = hash_file(target, algorithm)
        if actual != digest:
            problems.append(f"{relpath}: digest {actual} instead of {digest}")
    return problems


def algorithm_of_manifest(path: Path) -> str:
    """The hash algorithm a manifest was written with, from its suffix."""
    suffix = path.suffix.lstrip(".")
    for algorithm, known in MANIFEST_SUFFIX.items():
        if known == suffix:
            return algorithm
    raise ValueError(f"{path.name}: not an autotx manifest (suffix .{suffix})")
