"""Verified, parallel copy of a dataset; streaming hash; manifest.

Each file is read once, hashed while it is read, and written to the destination's
temporary area; the source is stat'ed before and after, so a file that changed while
it was copied is copied again. With ``readback`` verification the written file is
read back and hashed again. Durability is made cheap: instead of one fsync per file,
the caller syncs the destination's filesystem once (:func:`sync_filesystem`) before
the rename that makes the dataset visible.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import mmap
import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from autotx_lib.errors import (
    DestinationError,
    DestinationFullError,
    SourceChangedError,
    UnreadableFileError,
    VerificationError,
)
from autotx_lib.transfer.layout import SourceFile

BUFFER_SIZE = 4 * 1024 * 1024
KERNEL_COPY_MIN = 1024 * 1024  # from this size on, copy in the kernel and hash mapped pages
KERNEL_CHUNK = 64 * 1024 * 1024
_NO_KERNEL_COPY = {errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF}

# algorithm -> manifest suffix, and the standard tool that checks it
MANIFEST_SUFFIX = {"xxh3_128": "xxh128", "blake3": "b3", "sha256": "sha256", "md5": "md5"}
CHECK_TOOL = {"xxh3_128": "xxhsum -c", "blake3": "b3sum -c", "sha256": "sha256sum -c",
              "md5": "md5sum -c"}


class Throttle(Protocol):
    """What the copy asks between chunks (the resource gate implements it)."""

    def throttle(self, copied: int) -> None:
        """Block while paused or over the bandwidth cap; raise to abort the copy."""

    def chunk_size(self, default: int) -> int:
        """The chunk size to use (smaller under a bandwidth cap)."""


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
_libc = None  # the C library, loaded on first use (syncfs, sync_file_range)


def _buffer() -> memoryview:
    buf = getattr(_local, "buffer", None)
    if buf is None:
        buf = _local.buffer = memoryview(bytearray(BUFFER_SIZE))
    return buf


def _hash_fd(fd: int, algorithm: str) -> str:
    """Hash an open file from its start; large files through mmap (no copy to user space)."""
    hasher = new_hasher(algorithm)
    size = os.fstat(fd).st_size
    if size >= KERNEL_COPY_MIN:
        with mmap.mmap(fd, size, prot=mmap.PROT_READ) as mapped:
            mapped.madvise(mmap.MADV_SEQUENTIAL)
            with memoryview(mapped) as view:
                for offset in range(0, size, KERNEL_CHUNK):
                    hasher.update(view[offset:offset + KERNEL_CHUNK])
        return hasher.hexdigest()
    buf = _buffer()
    os.lseek(fd, 0, os.SEEK_SET)
    while n := os.readv(fd, [buf]):
        hasher.update(buf[:n])
    return hasher.hexdigest()


SYNC_FILE_RANGE_WRITE = 2


def _start_writeback(fd: int) -> None:
    """Ask the kernel to start writing a file's dirty pages now, without waiting.

    The final sync of the dataset then finds most of the data already on its way to disk,
    so the disk works while the next files are copied and hashed.
    """
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        _libc.sync_file_range(fd, ctypes.c_longlong(0), ctypes.c_longlong(0),
                              ctypes.c_uint(SYNC_FILE_RANGE_WRITE))
    except (OSError, AttributeError):
        pass  # only an optimisation; the final sync makes the data durable


def _readback(fd: int, algorithm: str) -> str:
    """Hash a just-written file read back from the destination, then start its writeback."""
    digest = _hash_fd(fd, algorithm)
    if os.fstat(fd).st_size >= KERNEL_COPY_MIN:
        _start_writeback(fd)
    return digest


def hash_file(path: Path, algorithm: str) -> str:
    """Hash a whole file; returns the hex digest."""
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


def _destination_error(error: OSError, destination: Path) -> DestinationError:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return DestinationFullError(destination)
    return DestinationError(destination, f"{error.strerror or error} ({error.filename or ''})")


def _stream(src_fd: int, dst_fd: int, hasher, on_bytes: Callable[[int], None] | None,
            limit: int, throttle: Throttle | None = None) -> int:
    """Copy at most ``limit`` bytes through a buffer, hashing them (a growing file cannot
    keep the copy going forever: the caller notices the growth and copies again)."""
    buf = _buffer()
    step = throttle.chunk_size(len(buf)) if throttle is not None else len(buf)
    total = 0
    while total < limit:
        n = os.readv(src_fd, [buf[:min(step, limit - total)]])
        if n == 0:
            return total
        chunk = buf[:n]
        hasher.update(chunk)
        written = 0
        while written < n:
            written += os.write(dst_fd, chunk[written:])
        total += n
        if on_bytes is not None:
            on_bytes(n)
        if throttle is not None:
            throttle.throttle(n)
    return total


def _kernel_copy(src_fd: int, dst_fd: int, on_bytes: Callable[[int], None] | None,
                 limit: int, throttle: Throttle | None = None) -> int | None:
    """Copy at most ``limit`` bytes in the kernel (copy_file_range).

    Returns None when the filesystems do not support it (the caller streams instead).
    """
    step = throttle.chunk_size(KERNEL_CHUNK) if throttle is not None else KERNEL_CHUNK
    total = 0
    while total < limit:
        try:
            n = os.copy_file_range(src_fd, dst_fd, min(step, limit - total))
        except OSError as error:
            if total == 0 and error.errno in _NO_KERNEL_COPY:
                return None
            raise
        if n == 0:
            return total
        total += n
        if on_bytes is not None:
            on_bytes(n)
        if throttle is not None:
            throttle.throttle(n)
    return total


def _copy_once(src_fd: int, dst_fd: int, algorithm: str, size: int, readback: bool,
               on_bytes: Callable[[int], None] | None,
               throttle: Throttle | None = None) -> tuple[int, str]:
    """Copy one file's bytes; return (bytes copied, digest of what was read from the source).

    With readback verification large files are copied in the kernel and the source hashed
    from its mapped pages (the destination is hashed afterwards by the caller); otherwise
    the bytes pass through a buffer and are hashed on the way.
    """
    if readback and size >= KERNEL_COPY_MIN:
        copied = _kernel_copy(src_fd, dst_fd, on_bytes, size, throttle)
        if copied is not None:
            return copied, _hash_fd(src_fd, algorithm)
    hasher = new_hasher(algorithm)
    copied = _stream(src_fd, dst_fd, hasher, on_bytes, size, throttle)
    return copied, hasher.hexdigest()


def copy_file(src: Path, dst: Path, algorithm: str, *, readback: bool = True,
              on_bytes: Callable[[int], None] | None = None, max_attempts: int = 3,
              relpath: str = "", throttle: Throttle | None = None) -> CopiedFile:
    """Copy one file, hashing while reading; verify; re-copy if the source changed meanwhile.

    Parameters
    ----------
    src, dst : Path
        Source file; destination file (its folder must exist; an existing file is replaced).
    algorithm : str
        ``xxh3_128``, ``blake3``, ``sha256`` or ``md5``.
    readback : bool
        Re-read the written file and compare its hash (default).
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
    """
    mismatches = 0
    for attempt in range(1, max_attempts + 1):
        outcome = _attempt(src, dst, algorithm, readback, on_bytes, throttle)
        if outcome is None:
            continue  # the source changed while it was read: copy it again
        size, mtime_ns, digest, written = outcome
        if written is not None and written != digest:
            mismatches += 1
            if mismatches >= 2:
                raise VerificationError(dst, digest, written)
            continue
        return CopiedFile(relpath or src.name, size, mtime_ns, digest, attempt)
    raise SourceChangedError(src, max_attempts)


def _attempt(src: Path, dst: Path, algorithm: str, readback: bool,
             on_bytes: Callable[[int], None] | None, throttle: Throttle | None
             ) -> tuple[int, int, str, str | None] | None:
    """Copy one file once: (size, mtime_ns, source digest, read-back digest or None).

    Returns None when the source changed while it was copied. The destination is read
    back through the descriptor it was written with (one open per file, not two).
    """
    try:
        src_fd = os.open(src, os.O_RDONLY)
    except OSError as error:
        raise UnreadableFileError(src, error.strerror or str(error)) from None
    try:
        before = os.fstat(src_fd)
        try:
            dst_fd = os.open(dst, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        except OSError as error:
            raise _destination_error(error, dst) from None
        try:
            try:
                copied, digest = _copy_once(src_fd, dst_fd, algorithm, before.st_size,
                                            readback, on_bytes, throttle)
            except OSError as error:
                if error.filename is None and error.errno in (errno.EIO,):
                    raise UnreadableFileError(src, error.strerror) from None
                raise _classify_stream_error(error, src, dst) from None
            after = os.stat(src)
            if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns) \
                    or copied != after.st_size:
                return None
            written = _readback(dst_fd, algorithm) if readback else None
            return copied, before.st_mtime_ns, digest, written
        finally:
            os.close(dst_fd)
    finally:
        os.close(src_fd)


def _classify_stream_error(error: OSError, src: Path, dst: Path) -> Exception:
    if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM):
        return _destination_error(error, dst)
    return UnreadableFileError(src, error.strerror or str(error))


BATCH_FILES = 32
BATCH_BYTES = 1024 * 1024  # a batch takes well under a second even at a low bandwidth cap


def _batches(files: list[SourceFile]) -> list[list[SourceFile]]:
    """Group small files into tasks (a large file is a task of its own).

    One task per small file costs more in thread hand-offs than the copy itself: with
    thousands of 32 kB files the threads spent their time waking each other.
    """
    batches: list[list[SourceFile]] = []
    current: list[SourceFile] = []
    size = 0
    for entry in files:
        if entry.size >= KERNEL_COPY_MIN:
            batches.append([entry])
            continue
        if current and (len(current) >= BATCH_FILES or size + entry.size > BATCH_BYTES):
            batches.append(current)
            current, size = [], 0
        current.append(entry)
        size += entry.size
    if current:
        batches.append(current)
    return batches


def _copy_batch(batch: list[SourceFile], src_root: Path, dst_root: Path, algorithm: str,
                **options) -> tuple[list[CopiedFile], BaseException | None]:
    """Copy a batch in order; returns what was copied and the error that stopped it."""
    done: list[CopiedFile] = []
    for entry in batch:
        try:
            done.append(copy_file(src_root / entry.relpath, dst_root / entry.relpath, algorithm,
                                  relpath=entry.relpath, **options))
        except BaseException as error:  # noqa: BLE001 - handed to the caller, who raises it
            return done, error
    return done, None


def copy_files(files: Iterable[SourceFile], src_root: Path, dst_root: Path, algorithm: str, *,
               workers: int = 4, readback: bool = True, max_attempts: int = 3,
               on_file: Callable[[CopiedFile], None] | None = None,
               on_bytes: Callable[[int], None] | None = None,
               should_stop: Callable[[], bool] | None = None,
               tick: Callable[[], None] | None = None,
               throttle: Throttle | None = None) -> list[CopiedFile]:
    """Copy many files of one dataset in parallel; returns what was copied and verified.

    ``on_file`` is called in the calling thread for each verified file (e.g. to record
    it in the journal); ``tick`` about twice a second (live progress). ``should_stop``
    returning True stops starting new files; files under way finish. Small files travel
    in batches (up to 32 files or 1 MiB a task).

    The first error stops the copy and is raised after the running tasks finish; what was
    verified before it is still reported through ``on_file``.
    """
    todo = list(files)
    folders = sorted({str(Path(f.relpath).parent) for f in todo})
    try:
        for folder in folders:
            (dst_root / folder).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _destination_error(error, dst_root) from None
    options = {"readback": readback, "on_bytes": on_bytes, "max_attempts": max_attempts,
               "throttle": throttle}
    results: list[CopiedFile] = []
    pending: set[Future] = set()
    first_error: BaseException | None = None
    queue = iter(_batches(todo))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="autotx-copy") as pool:
        def submit_next() -> bool:
            if first_error is not None or (should_stop is not None and should_stop()):
                return False
            batch = next(queue, None)
            if batch is None:
                return False
            pending.add(pool.submit(_copy_batch, batch, src_root, dst_root, algorithm,
                                    **options))
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
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(path, os.O_RDONLY)
        try:
            if _libc.syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    except (OSError, AttributeError):
        pass
    os.sync()


# --- manifests -----------------------------------------------------------------------


def manifest_name(algorithm: str) -> str:
    """The manifest's file name, e.g. ``autotx-manifest.xxh128``."""
    return f"autotx-manifest.{MANIFEST_SUFFIX[algorithm]}"


def _manifest_line(digest: str, relpath: str) -> str:
    # GNU coreutils convention (sha256sum, b3sum): a leading backslash marks escaped names.
    if "\\" in relpath:
        return f"\\{digest}  {relpath.replace(chr(92), chr(92) * 2)}\n"
    return f"{digest}  {relpath}\n"


def write_manifest(folder: Path, entries: Iterable[tuple[str, str]], algorithm: str,
                   taken: set[str] | None = None) -> Path:
    """Write ``<digest>  <relpath>`` lines into ``folder``, checkable by the standard tool.

    ``cd folder && xxhsum -c autotx-manifest.xxh128`` (or ``b3sum -c``, ``sha256sum -c``,
    ``md5sum -c``) checks every file. A dataset file with the manifest's name is never
    replaced: the manifest then takes a suffixed name.
    """
    name = manifest_name(algorithm)
    stem, suffix = name.rsplit(".", 1)
    number = 0
    while (taken and name in taken) or (folder / name).exists():
        number += 1
        name = f"{stem}-{number}.{suffix}"
    path = folder / name
    text = "".join(_manifest_line(d, r) for r, d in sorted(entries))
    path.write_text(text, encoding="utf-8")
    return path


def read_manifest(path: Path) -> list[tuple[str, str]]:
    """Parse a manifest into ``(relpath, digest)`` pairs."""
    pairs = []
    for line in path.read_text(encoding="utf-8").splitlines():
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
