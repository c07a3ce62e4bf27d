"""A destination that is a local folder (a disk, or a share mounted by the system).

Failures are classified by ``errno``: no space -> full, read-only filesystem -> read-only,
EACCES/EPERM -> permission, a vanished root or a dead mount (ENOTCONN, EHOSTDOWN, ESTALE)
-> missing. A rename uses ``renameat2(RENAME_NOREPLACE)`` where the filesystem has it,
so it can never replace an existing entry (plain ``rename`` replaces an empty folder).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from autotx_lib.errors import (
    DestinationFullError,
    DestinationMissing,
    DestinationNameTaken,
    DestinationPermission,
    DestinationReadOnly,
)
from autotx_lib.transfer import _platform as P
from autotx_lib.transfer.destinations.base import (
    Destination,
    EntryInfo,
    TranslatingStream,
    clean_relpath,
)
from autotx_lib.transfer.names import WINDOWS_FILESYSTEMS, windows_name_problem

_GONE = {errno.ENOTCONN, errno.EHOSTDOWN, errno.EHOSTUNREACH, errno.ESTALE, errno.ENODEV,
         errno.ENXIO}
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


def rename_noreplace(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``; FileExistsError if ``dst`` exists (never replaced).

    Atomic through ``renameat2(RENAME_NOREPLACE)`` (Linux); elsewhere, or on filesystems
    without it, ``dst`` is checked first (a race with another writer is then possible).
    """
    libc = P.libc()
    function = getattr(libc, "renameat2", None) if libc is not None else None
    if function is not None:
        result = function(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst),
                          _RENAME_NOREPLACE)
        if result == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise OSError(code, os.strerror(code), str(src), None, str(dst))
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    os.rename(src, dst)


class LocalDestination(Destination):
    """A destination folder on this machine.

    Parameters
    ----------
    root : Path
        The destination folder (a mount point, for a mounted share).
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.url = str(self.root)
        self._windows_names: bool | None = None

    def name_problem(self, name: str) -> str | None:
        """Windows' naming rules where the folder is a Windows file system: on Windows, or on
        Linux a mounted SMB share (``cifs``), a FAT or NTFS disk (asked once)."""
        if self._windows_names is None:
            self._windows_names = os.name == "nt" or \
                P.filesystem_type(self.root) in WINDOWS_FILESYSTEMS
        if not self._windows_names:
            return None
        problem = windows_name_problem(name)
        return problem and f"{problem} (the folder is on a Windows file system)"

    def local_path(self, relpath: str = "") -> Path:
        """The file or folder on this machine."""
        relpath = clean_relpath(relpath)
        return self.root / relpath if relpath else self.root

    _path = local_path

    def classify(self, error: OSError, relpath: str = "") -> BaseException:
        """The typed destination error for an OSError (or the error itself: e.g. a missing
        entry inside a reachable destination stays a FileNotFoundError)."""
        where = self._path(relpath) if relpath else self.root
        code = error.errno
        reason = f"{error.strerror or error}"
        if code in (errno.ENOSPC, errno.EDQUOT):
            return DestinationFullError(where)
        if code == errno.EROFS:
            return DestinationReadOnly(where, "read-only filesystem")
        if code in (errno.EACCES, errno.EPERM):
            return DestinationPermission(where, f"permission denied ({reason})")
        if code in _GONE or (code == errno.ENOENT and not self.root.is_dir()):
            return DestinationMissing(self.root, f"missing or not mounted ({reason})")
        if code in (errno.EEXIST, errno.ENOTEMPTY):
            return DestinationNameTaken(where, "the name is taken")
        return error

    @contextlib.contextmanager
    def _translated(self, relpath: str = "") -> Iterator[None]:
        try:
            yield
        except OSError as error:
            translated = self.classify(error, relpath)
            if translated is error:
                raise
            raise translated from None

    def stat(self, relpath: str) -> EntryInfo:
        with self._translated(relpath):
            info = os.stat(self._path(relpath))
        return EntryInfo(info.st_size, info.st_mtime_ns, stat.S_ISDIR(info.st_mode))

    def listdir(self, relpath: str = "") -> list[str]:
        with self._translated(relpath):
            return sorted(os.listdir(self._path(relpath)))

    def make_dirs(self, relpath: str) -> None:
        with self._translated(relpath):
            if not self.root.is_dir():
                raise FileNotFoundError(errno.ENOENT, "no such folder", str(self.root))
            self._path(relpath).mkdir(parents=True, exist_ok=True)

    def open_write(self, relpath: str) -> BinaryIO:
        with self._translated(relpath):
            raw = open(self._path(relpath), "wb")  # noqa: SIM115 - returned to the caller
        return TranslatingStream(raw, lambda e: self.classify(e, relpath))  # type: ignore

    def open_read(self, relpath: str) -> BinaryIO:
        with self._translated(relpath):
            raw = open(self._path(relpath), "rb")  # noqa: SIM115 - returned to the caller
            drop_cached_pages(raw.fileno())
        return TranslatingStream(raw, lambda e: self.classify(e, relpath))  # type: ignore

    def rename(self, src: str, dst: str) -> None:
        with self._translated(dst):
            rename_noreplace(self._path(src), self._path(dst))

    def remove_tree(self, relpath: str) -> None:
        path = self._path(relpath)
        with self._translated(relpath):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)

    def free_bytes(self) -> int:
        with self._translated():
            return shutil.disk_usage(self.root).free

    def sync(self, relpath: str = "") -> None:
        """Flush the whole filesystem once (``syncfs``): cheaper than an fsync per file."""
        with self._translated(relpath):
            P.sync_filesystem(self._path(relpath))

    def _check_reachable(self) -> None:
        if not self.root.is_dir():
            raise DestinationMissing(self.root, "missing or not mounted")

    def _check_writable(self) -> None:
        if os.access(self.root, os.W_OK):
            return
        if hasattr(os, "statvfs") and os.statvfs(self.root).f_flag & os.ST_RDONLY:
            raise DestinationReadOnly(self.root, "read-only filesystem")
        raise DestinationPermission(self.root, "not writable by the agent's user")


def drop_cached_pages(fd: int) -> None:
    """Flush a file and drop its cached pages, so reading it goes to the storage.

    ``fdatasync`` then ``posix_fadvise(DONTNEED)``; where the OS has neither, nothing is
    dropped (the read may come from the cache).
    """
    with contextlib.suppress(OSError):  # e.g. a filesystem without sync: nothing to drop
        P.flush_data(fd)
    P.drop_cache(fd)


__all__ = ["LocalDestination", "drop_cached_pages", "rename_noreplace"]
