"""The few operating-system calls the copy path uses that not every system has.

Linux gives positioned vector reads (``preadv``), write-back control
(``sync_file_range``), a per-filesystem sync (``syncfs``), cache hints
(``posix_fadvise``), ``RWF_NOWAIT`` and directory fsync. macOS and Windows instrument PCs
lack some or all of them; every function here has a portable fallback with the same
meaning (slower, or a no-op where the guarantee does not exist there), so the agent runs
everywhere. Set ``FORCE_PORTABLE = True`` (or ``AUTOTX_PORTABLE_IO=1`` in the environment)
to use only the fallbacks: the test suite runs the copy path that way on Linux too.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import sys
from pathlib import Path

FORCE_PORTABLE = os.environ.get("AUTOTX_PORTABLE_IO") == "1"

SYNC_FILE_RANGE_WRITE = 2
SYNC_FILE_RANGE_WAIT_ALL = 7  # WAIT_BEFORE | WRITE | WAIT_AFTER

_libc = None


def _has(name: str, module=os) -> bool:
    return not FORCE_PORTABLE and hasattr(module, name)


def libc():
    """The C library for ``sync_file_range``/``syncfs`` (None where it cannot be loaded)."""
    global _libc
    if FORCE_PORTABLE or os.name == "nt":
        return None
    if _libc is None:
        try:
            _libc = ctypes.CDLL(None, use_errno=True)
        except (OSError, TypeError):
            return None
    return _libc


def pread_into(fd: int, buf: memoryview, offset: int) -> int:
    """Read into ``buf`` from ``offset`` without moving the file position (if possible)."""
    if _has("preadv"):
        return os.preadv(fd, [buf], offset)
    os.lseek(fd, offset, os.SEEK_SET)  # each descriptor is read by one thread at a time
    data = os.read(fd, len(buf))
    buf[:len(data)] = data
    return len(data)


def read_into(fd: int, buf: memoryview) -> int:
    """Read into ``buf`` from the current position."""
    if _has("readv"):
        return os.readv(fd, [buf])
    data = os.read(fd, len(buf))
    buf[:len(data)] = data
    return len(data)


def start_writeback(fd: int, offset: int = 0, length: int = 0) -> None:
    """Start writing a file's dirty pages back now, without waiting (an optimisation)."""
    c = libc()
    if c is not None:
        with contextlib.suppress(OSError, AttributeError):
            c.sync_file_range(fd, ctypes.c_longlong(offset), ctypes.c_longlong(length),
                              ctypes.c_uint(SYNC_FILE_RANGE_WRITE))


def wait_written(fd: int, offset: int, length: int) -> bool:
    """Write a range back and wait for it; False where that is not possible (flush instead)."""
    c = libc()
    if c is None:
        return False
    try:
        return c.sync_file_range(fd, ctypes.c_longlong(offset), ctypes.c_longlong(length),
                                 ctypes.c_uint(SYNC_FILE_RANGE_WAIT_ALL)) == 0
    except (OSError, AttributeError):
        return False


def drop_cache(fd: int, offset: int = 0, length: int = 0) -> None:
    """Ask the OS to forget a flushed file's cached pages (no-op where it cannot)."""
    if _has("posix_fadvise"):
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)


def will_need(fd: int, small: bool) -> None:
    """Hint that a file is about to be read (readahead); no-op where there is no hint."""
    if _has("posix_fadvise"):
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED if small
                             else os.POSIX_FADV_SEQUENTIAL)


def page_cached(fd: int, offset: int) -> bool:
    """Whether the page at ``offset`` is still cached (True when it cannot be known)."""
    if not (_has("preadv") and _has("RWF_NOWAIT")):
        return True
    try:
        os.preadv(fd, [bytearray(1)], offset, os.RWF_NOWAIT)
    except BlockingIOError:
        return False
    except OSError:
        return True
    return True


def flush_data(fd: int) -> None:
    """fdatasync where it exists, else fsync."""
    (os.fdatasync if _has("fdatasync") else os.fsync)(fd)


def sync_filesystem(path: Path) -> None:
    """Flush everything written to the filesystem holding ``path`` (syncfs, else sync).

    Where neither exists (Windows) the files were flushed one by one by the copy.
    """
    c = libc()
    if c is not None:
        with contextlib.suppress(OSError, AttributeError):
            fd = os.open(path, os.O_RDONLY)
            try:
                if c.syncfs(fd) == 0:
                    return
            finally:
                os.close(fd)
    if hasattr(os, "sync"):
        os.sync()


def fsync_dir(folder: Path) -> None:
    """Make a rename or creation inside ``folder`` durable (Windows: nothing to do; NTFS
    journals its metadata and a folder cannot be opened for fsync)."""
    if os.name == "nt" or not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def filesystem_type(path: str | os.PathLike) -> str | None:
    """The type of the file system holding ``path``, as Linux names it (``ext4``, ``cifs``,
    ``vfat`` ...); None elsewhere, or when it cannot be told."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        mounts = Path("/proc/self/mounts").read_text()
    except OSError:
        return None
    return filesystem_type_in(os.path.realpath(path), mounts)


def filesystem_type_in(path: str, mounts: str) -> str | None:
    """The type of the innermost mount holding ``path``, read from a ``/proc/mounts`` text
    (a later mount over the same point wins, as the kernel's does)."""
    found, kind = "", None
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[1])
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(found):
            found, kind = point, fields[2]
    return kind


__all__ = ["FORCE_PORTABLE", "drop_cache", "filesystem_type", "filesystem_type_in", "flush_data",
           "fsync_dir", "libc", "page_cached",
           "pread_into", "read_into", "start_writeback", "sync_filesystem", "wait_written",
           "will_need"]
