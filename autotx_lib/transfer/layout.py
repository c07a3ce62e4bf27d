"""The managed folders, dataset naming, and path safety.

::

    incoming/<user>/<dataset>
    managed/processing/<stamp>__<user>__<dataset>
    <destination>/<tmp>/<user>/<stamp>__<dataset>     (assembled here, then renamed)
    <destination>/<user>/<dataset>                    (suffix _1, _2 ... on a name clash)
    managed/done/<user>/<stamp>__<dataset>            (grace)
    managed/error/<user>/<stamp>__<dataset>           (+ <stamp>__<dataset>.reason.txt)
    managed/unmatched/<user>/<stamp>__<dataset>
"""

from __future__ import annotations

import datetime as dt
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from autotx_lib.errors import UnreadableFileError, UnsafePathError
from autotx_lib.transfer import _platform

MAX_NAME_BYTES = 255
SUFFIX_ROOM = 24  # what free_name's "_N" and a quarantine's ".reason.txt" may add
MAX_RELPATH_BYTES = 3072  # leaves room for the destination's own prefix under PATH_MAX


@dataclass(frozen=True)
class ManagedFolders:
    """The agent's folders under ``managed``."""

    root: Path

    @property
    def processing(self) -> Path:
        return self.root / "processing"

    @property
    def done(self) -> Path:
        return self.root / "done"

    @property
    def error(self) -> Path:
        return self.root / "error"

    @property
    def unmatched(self) -> Path:
        return self.root / "unmatched"

    def create(self) -> None:
        """Create the folders (idempotent)."""
        for folder in (self.processing, self.done, self.error, self.unmatched):
            folder.mkdir(parents=True, exist_ok=True)


def make_stamp(when: dt.datetime | None = None) -> str:
    """A sortable, file-name-safe time stamp like ``2026-11-23_22-41-07``."""
    return (when or dt.datetime.now()).strftime("%Y-%m-%d_%H-%M-%S")


def stamped_name(stamp: str, *parts: str) -> str:
    """``<stamp>__<part>__<part>...``, shortened to fit one file name with room to spare.

    The agent's own folder names (processing/, done/, error/, the tmp area) add a stamp and
    the user to a dataset name that may itself be 255 bytes long. When the result would
    not fit, the last part is cut (at a character boundary) and an 8-digit hash of the
    full name keeps it unique; the journal keeps the full dataset name.

    Examples
    --------
    >>> stamped_name("2026-11-23_22-41-07", "alice", "exp1")
    '2026-11-23_22-41-07__alice__exp1'
    >>> len(stamped_name("2026-11-23_22-41-07", "alice", "x" * 255).encode()) <= 231
    True
    """
    full = "__".join((stamp, *parts))
    limit = MAX_NAME_BYTES - SUFFIX_ROOM
    if len(full.encode("utf-8")) <= limit:
        return full
    import hashlib

    tag = "~" + hashlib.sha256(full.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    head = "__".join((stamp, *parts[:-1], ""))
    room = limit - len(head.encode("utf-8")) - len(tag)
    if room < 8:  # even the user name is very long: cut the whole name instead
        head, room = "", limit - len(tag)
        parts = (full,)
    last = parts[-1].encode("utf-8", "surrogateescape")[:room]
    return head + last.decode("utf-8", "ignore") + tag


def parse_stamped(name: str) -> tuple[str | None, str | None, str | None]:
    """Split a processing/ folder name ``<stamp>__<user>__<dataset>`` (Nones if it is not one).

    Examples
    --------
    >>> parse_stamped("2026-11-23_22-41-07__alice__exp1")
    ('2026-11-23_22-41-07', 'alice', 'exp1')
    >>> parse_stamped("exp1")
    (None, None, None)
    """
    parts = name.split("__", 2)
    if len(parts) != 3 or not all(parts):
        return None, None, None
    try:
        dt.datetime.strptime(parts[0], "%Y-%m-%d_%H-%M-%S")
    except ValueError:
        return None, None, None
    return parts[0], parts[1], parts[2]


def check_name(name: str, where: str | Path = "") -> None:
    """Raise :class:`UnsafePathError` unless ``name`` is one safe path component.

    Refused: empty names, ``.`` and ``..``, separators, control characters (they break
    manifests and most tools), names that are not valid UTF-8, and names longer than
    255 bytes.
    """
    def shown() -> str:  # built only for an error: this runs once per file of a dataset
        return os.path.join(str(where), name) if where else name

    if name in {"", ".", ".."}:
        raise UnsafePathError(shown(), "not a usable name")
    if "/" in name or "\0" in name:
        raise UnsafePathError(shown(), "contains a path separator")
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        raise UnsafePathError(repr(name), "the name is not valid UTF-8") from None
    if not name.isprintable() and any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise UnsafePathError(shown(), "contains a control character (e.g. a newline)")
    if len(encoded) > MAX_NAME_BYTES:
        raise UnsafePathError(shown(), f"the name is {len(encoded)} bytes long; at most "
                              f"{MAX_NAME_BYTES} fit on the destination")


def safe_join(base: Path, *parts: str) -> Path:
    """Join checked name components onto ``base``; never escapes ``base``."""
    for part in parts:
        check_name(part, base)
    return base.joinpath(*parts)


@dataclass(frozen=True)
class SourceFile:
    """A regular file of a dataset, as found when the dataset was listed."""

    relpath: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class DatasetListing:
    """What a dataset folder holds: its files, and what was found but is not copied."""

    files: list[SourceFile]
    skipped: list[str]  # "relpath: why" for symlinks and special files

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def list_dataset(root: Path) -> DatasetListing:
    """List a dataset's regular files; symlinks and special files are skipped and named.

    Symlinks are never followed (they could lead out of incoming/); every name is
    checked with :func:`check_name`.

    Raises
    ------
    UnsafePathError
        A name cannot be transferred safely (not UTF-8, control characters, too long).
    UnreadableFileError
        A folder inside the dataset cannot be listed (permissions).
    """
    found: list[SourceFile] = []
    skipped: list[str] = []
    for relpath, entry_stat in _walk(root, ""):
        mode = entry_stat.st_mode
        if stat.S_ISLNK(mode):
            skipped.append(f"{relpath}: symbolic link (not followed, not copied)")
        elif stat.S_ISREG(mode):
            found.append(SourceFile(relpath, entry_stat.st_size, entry_stat.st_mtime_ns))
        else:
            skipped.append(f"{relpath}: not a regular file")
    found.sort(key=lambda f: f.relpath)
    return DatasetListing(found, skipped)


def _walk(root: Path, prefix: str) -> Iterator[tuple[str, os.stat_result]]:
    folder = root / prefix if prefix else root
    try:
        entries = os.scandir(folder)
    except PermissionError as error:  # the same rule as for an unreadable file: quarantine
        raise UnreadableFileError(folder, f"the folder cannot be listed ({error.strerror})"
                                  ) from None
    with entries:
        for entry in entries:
            check_name(entry.name, folder)
            relpath = f"{prefix}/{entry.name}" if prefix else entry.name
            if len(relpath.encode("utf-8")) > MAX_RELPATH_BYTES:
                raise UnsafePathError(root / relpath, "the path is too long for the destination")
            entry_stat = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(entry_stat.st_mode):
                yield from _walk(root, relpath)
            else:
                yield relpath, entry_stat


def free_name(folder: Path, name: str) -> Path:
    """``folder/name``, or ``folder/name_1``, ``_2`` ... if taken: never an existing path."""
    candidate = folder / name
    number = 0
    while os.path.lexists(candidate):
        number += 1
        candidate = folder / f"{name}_{number}"
    return candidate


def fsync_dir(folder: Path) -> None:
    """Make a rename or creation inside ``folder`` durable (where the OS can: not Windows)."""
    _platform.fsync_dir(folder)


def move_dir(source: Path, target: Path) -> Path:
    """Rename ``source`` to a free name at ``target`` (same volume), durably.

    Returns the path actually used (suffixed when ``target`` was taken).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    final = free_name(target.parent, target.name)
    os.rename(source, final)
    fsync_dir(final.parent)
    if source.parent != final.parent:
        fsync_dir(source.parent)
    return final
