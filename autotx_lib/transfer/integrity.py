"""Compare a dataset's files with what the journal recorded when it was delivered.

The journal's file rows (relpath, size, mtime, digest) are the reference; the manifest,
the original in the grace area and the delivered copy are checked against them. Each
function returns one line per disagreement, naming the file and why (empty: agrees).
Used by ``autotx grace purge`` (before an original is removed) and ``autotx verify``
(bit rot, tampering or deletion at the destination). A delivered copy is a local folder
(a :class:`~pathlib.Path`) or a :class:`RemoteFolder` at a destination reached through its
protocol (an ``smb://`` share); both are checked the same way.
"""

from __future__ import annotations

import datetime as dt
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autotx_lib.errors import DestinationError
from autotx_lib.transfer.copy import hash_file, new_hasher, read_manifest
from autotx_lib.transfer.destinations import Destination

READ_CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True)
class RemoteFolder:
    """A file or folder at a destination reached through its protocol (e.g. ``smb://``).

    Offers what the checks below need of a :class:`~pathlib.Path`: ``name``, ``/``,
    ``is_dir``, ``is_file``, ``read_text`` (so :func:`read_manifest` reads it) and
    ``__str__`` (its URL, for messages).
    """

    destination: Destination
    relpath: str

    def __str__(self) -> str:
        return f"{self.destination.url.rstrip('/')}/{self.relpath}"

    def __truediv__(self, name: str) -> RemoteFolder:
        return RemoteFolder(self.destination, f"{self.relpath}/{name}")

    @property
    def name(self) -> str:
        return self.relpath.rsplit("/", 1)[-1]

    def _kind(self) -> bool | None:
        try:
            return self.destination.stat(self.relpath).is_dir
        except FileNotFoundError:
            return None

    def is_dir(self) -> bool:
        return self._kind() is True

    def is_file(self) -> bool:
        return self._kind() is False

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.destination.read_bytes(self.relpath).decode(encoding)

    def hash(self, algorithm: str) -> str:
        """The file's digest as the destination returns it."""
        hasher = new_hasher(algorithm)
        with self.destination.open_read(self.relpath) as stream:
            while chunk := stream.read(READ_CHUNK):
                hasher.update(chunk)
        return hasher.hexdigest()


Folder = Path | RemoteFolder

# Why a file that is not in the journal matters, per side.
EXTRA = {"original": "never delivered", "delivered copy": "added after delivery"}
# Why a file whose fresh hash differs from the journal's matters, per side.
HASH_DIFFERS = {"original": "changed since it was copied",
                "delivered copy": "changed or damaged since delivery"}


def delivered_at(path: str, destination: Destination | None = None) -> Folder:
    """A delivered copy's stored path as a :data:`Folder`.

    ``destination`` is the protocol destination it was written through (None: ``path`` is
    a local folder). ``path`` may be relative to that destination, or its URL form
    (``smb://server/share/alice/exp``, as the dataset row shows it).
    """
    if destination is None:
        return Path(path)
    prefix = destination.url.rstrip("/") + "/"
    return RemoteFolder(destination, path[len(prefix):] if path.startswith(prefix) else path)


def journal_disagreements(rows: Sequence[Any]) -> list[str]:
    """The journal's file rows must all carry the digest of a verified copy."""
    if not rows:
        return ["the journal lists no files for this dataset, so there is nothing to compare"]
    return [f"{row.relpath}: the journal has no digest for it (never verified)"
            for row in rows if not row.digest or not row.verified]


def manifest_disagreements(manifest: Folder, rows: Sequence[Any], algorithm: str,
                           manifest_digest: str | None = None) -> list[str]:
    """The manifest must be the one delivered and list exactly the journal's digests."""
    try:
        listed = dict(read_manifest(manifest))  # type: ignore[arg-type] - reads like a Path
        digest = _hash(manifest, algorithm)
    except (OSError, ValueError, UnicodeDecodeError, DestinationError) as error:
        return [f"the manifest {manifest} cannot be read ({error})"]
    reasons = []
    if manifest_digest and digest != manifest_digest:
        reasons.append(f"the manifest {manifest.name} changed since delivery (its digest "
                       "differs from the journal's)")
    for row in rows:
        if row.relpath not in listed:
            reasons.append(f"{row.relpath} is in the journal but not in the delivered copy's "
                           "manifest")
        elif listed.pop(row.relpath) != row.digest:
            reasons.append(f"{row.relpath}: the manifest's digest differs from the journal's "
                           "(the manifest was rewritten)")
    reasons += [f"{relpath} is in the delivered copy's manifest but not in the journal"
                for relpath in sorted(listed)]
    return reasons


def _hash(file: Folder, algorithm: str) -> str:
    return file.hash(algorithm) if isinstance(file, RemoteFolder) else hash_file(file, algorithm)


@dataclass(frozen=True)
class _Found:
    is_file: bool
    size: int
    mtime_ns: int


def _listing(folder: Folder, skip: str | None = None) -> dict[str, _Found]:
    """Everything but directories below ``folder``, by relpath; symlinks not followed."""
    if isinstance(folder, RemoteFolder):
        return _remote_listing(folder, skip)
    found: dict[str, _Found] = {}
    stack = [""]
    while stack:
        prefix = stack.pop()
        with os.scandir(folder / prefix if prefix else folder) as entries:
            for item in entries:
                relpath = f"{prefix}/{item.name}" if prefix else item.name
                info = item.stat(follow_symlinks=False)
                if stat.S_ISDIR(info.st_mode):
                    stack.append(relpath)
                elif relpath != skip:
                    found[relpath] = _Found(stat.S_ISREG(info.st_mode), info.st_size,
                                            info.st_mtime_ns)
    return found


def _remote_listing(folder: RemoteFolder, skip: str | None) -> dict[str, _Found]:
    destination, found, stack = folder.destination, {}, [""]
    while stack:
        prefix = stack.pop()
        base = f"{folder.relpath}/{prefix}" if prefix else folder.relpath
        for name in destination.listdir(base):
            relpath = f"{prefix}/{name}" if prefix else name
            info = destination.stat(f"{base}/{name}")
            if info.is_dir:
                stack.append(relpath)
            elif relpath != skip:
                found[relpath] = _Found(True, info.size, info.mtime_ns)
    return found


def _when(ns: int) -> str:
    seconds, rest = divmod(ns, 10**9)
    return f"{dt.datetime.fromtimestamp(seconds):%Y-%m-%d %H:%M:%S}.{rest:09d}"


def listing_disagreements(folder: Folder, rows: Sequence[Any], side: str, *, mtimes: bool,
                          skip: str | None = None) -> list[str]:
    """The files of one side (``original`` or ``delivered copy``) against the journal's
    rows: names, sizes, and modification times if asked."""
    try:
        found = _listing(folder, skip)
    except (OSError, DestinationError) as error:
        return [f"the {side} {folder} cannot be listed ({error})"]
    reasons = []
    for row in rows:
        info = found.pop(row.relpath, None)
        changed = f"{row.relpath} in the {side} changed since it was copied"
        if info is None:
            reasons.append(f"{row.relpath} is missing from the {side}")
        elif not info.is_file:
            reasons.append(f"{row.relpath} in the {side} is no longer a regular file")
        elif info.size != row.size:
            reasons.append(f"{changed} (size {row.size} -> {info.size} bytes)")
        elif mtimes and info.mtime_ns != row.mtime_ns:
            reasons.append(f"{changed} (modified {_when(row.mtime_ns)} -> "
                           f"{_when(info.mtime_ns)})")
    reasons += [f"{relpath} in the {side} is not in the journal ({EXTRA[side]})"
                for relpath in sorted(found)]
    return reasons


def hash_disagreements(folder: Folder, rows: Sequence[Any], side: str, algorithm: str,
                       on_file: Callable[[Any], None] | None = None) -> list[str]:
    """Hash every journal file below ``folder``; each must equal the journal's digest.

    ``on_file`` receives each row once its file was hashed (progress).
    """
    reasons = []
    for row in rows:
        try:
            if _hash(folder / row.relpath, algorithm) != row.digest:
                reasons.append(f"{row.relpath} in the {side} differs from the journal's "
                               f"digest ({HASH_DIFFERS[side]})")
        except (OSError, DestinationError) as error:
            reasons.append(f"{row.relpath} in the {side} cannot be read to hash it "
                           f"({getattr(error, 'strerror', None) or error})")
        if on_file is not None:
            on_file(row)
    return reasons


__all__ = ["Folder", "RemoteFolder", "delivered_at", "hash_disagreements", "journal_disagreements", "listing_disagreements",
           "manifest_disagreements"]
