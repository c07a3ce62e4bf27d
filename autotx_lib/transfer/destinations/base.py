"""The destination protocol: where datasets are delivered, whatever the transport.

A destination (like a restic backend or an rclone remote) offers a few operations on
paths relative to its root: write a file, read it back, make folders, rename a dataset
into place without ever overwriting, free space, remove a tmp tree. Each transport
classifies its own failures into the :class:`~autotx_lib.errors.DestinationError` types
(missing, read-only, full, permission, auth, name taken), so callers decide by type and
never by message text. An entry that does not exist raises :class:`FileNotFoundError`.

Paths are relative, ``/``-separated (``alice/.autotx-tmp/exp/img.tif``); ``""`` is the
root. ``..`` and absolute paths are refused.

Examples
--------
>>> dest = open_destination("/mnt/storage")                       # doctest: +SKIP
>>> dest.make_tmp(".autotx-tmp/alice/exp")                        # doctest: +SKIP
>>> with dest.open_write(".autotx-tmp/alice/exp/a.tif") as out:   # doctest: +SKIP
...     out.write(data)
>>> dest.rename(".autotx-tmp/alice/exp", "alice/exp")             # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

from autotx_lib.errors import DestinationError, DestinationNameTaken, DestinationNotMountedError

MARKER_NAME = ".autotx-destination"


@dataclass(frozen=True)
class EntryInfo:
    """What :meth:`Destination.stat` tells about an entry."""

    size: int
    mtime_ns: int
    is_dir: bool


def clean_relpath(relpath: str) -> str:
    """``relpath`` normalised (``a/b``), or ValueError when it could leave the root."""
    parts = [p for p in str(relpath).replace("\\", "/").split("/") if p not in ("", ".")]
    if str(relpath).startswith("/") or ".." in parts:
        raise ValueError(f"{relpath!r} is not a path inside the destination: use a relative "
                         "path without '..'")
    return "/".join(parts)


class Destination(ABC):
    """A place datasets are delivered to; see the module doc for the contract.

    A transport implements the abstract methods and raises the typed destination errors;
    the base derives the rest (``exists``, ``make_tmp``, ``free_name``, the marker file and
    :meth:`check`). Use it as a context manager, or call :meth:`close`.
    """

    #: What to show for this destination (never holds a secret).
    url: str = ""

    # --- what a transport implements ----------------------------------------------------

    @abstractmethod
    def stat(self, relpath: str) -> EntryInfo:
        """Size, modification time and kind of an entry (FileNotFoundError if missing)."""

    @abstractmethod
    def listdir(self, relpath: str = "") -> list[str]:
        """Names in a folder, sorted."""

    @abstractmethod
    def make_dirs(self, relpath: str) -> None:
        """Create a folder and its parents; an existing folder is fine."""

    @abstractmethod
    def open_write(self, relpath: str) -> BinaryIO:
        """A binary stream writing a file (created or truncated; its folder must exist).

        Closing the stream flushes it to the storage where the transport can.
        """

    @abstractmethod
    def open_read(self, relpath: str) -> BinaryIO:
        """A binary stream reading a file as the storage holds it (for verification).

        A local file is flushed and its cached pages dropped first (where the OS allows);
        a share's file is read from the server.
        """

    @abstractmethod
    def rename(self, src: str, dst: str) -> None:
        """Rename a file or folder (same destination); never replaces anything.

        Raises
        ------
        DestinationNameTaken
            ``dst`` exists (pick another with :meth:`free_name`).
        FileNotFoundError
            ``src`` does not exist.
        """

    @abstractmethod
    def remove_tree(self, relpath: str) -> None:
        """Remove a file or a folder with everything in it; a missing entry is fine."""

    @abstractmethod
    def free_bytes(self) -> int:
        """Bytes this user may still write at the destination."""

    @abstractmethod
    def _check_reachable(self) -> None:
        """Raise DestinationMissing (or Auth...) unless the root can be reached."""

    @abstractmethod
    def _check_writable(self) -> None:
        """Raise DestinationReadOnly / DestinationPermission unless the root is writable."""

    def sync(self, relpath: str = "") -> None:  # noqa: B027 - a transport may have nothing to do
        """Make what was written below ``relpath`` durable before it is renamed into place."""

    def name_problem(self, name: str) -> str | None:
        """Why this destination cannot store an entry called ``name`` (one path component)
        as it is, or None. A transport with naming rules (SMB: Windows names) overrides it."""
        return None

    def local_path(self, relpath: str = ""):
        """The local filesystem path of an entry, for fast paths (None: not a local folder)."""
        return None

    def close(self) -> None:  # noqa: B027 - only transports with connections need it
        """Release connections (the destination may be used again: it reconnects)."""

    # --- derived ----------------------------------------------------------------------

    def __enter__(self) -> Destination:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    def exists(self, relpath: str) -> bool:
        """Whether an entry exists."""
        try:
            self.stat(relpath)
        except FileNotFoundError:
            return False
        return True

    def make_tmp(self, relpath: str) -> str:
        """Create a temporary folder for a dataset being written (kept if it exists: a
        resumed copy); returns ``relpath``, normalised."""
        relpath = clean_relpath(relpath)
        self.make_dirs(relpath)
        return relpath

    def free_name(self, folder: str, name: str) -> str:
        """``folder/name``, or ``folder/name_1``, ``_2``... : a path that is not taken."""
        folder = clean_relpath(folder)
        candidate, number = name, 0
        while self.exists(f"{folder}/{candidate}" if folder else candidate):
            number += 1
            candidate = f"{name}_{number}"
        return f"{folder}/{candidate}" if folder else candidate

    def case_sensitive(self) -> bool:
        """Whether ``A.tif`` and ``a.tif`` are two entries here (an SMB share, a CIFS mount,
        macOS and Windows disks usually say no).

        Asked once per destination object: by looking for the marker file under its name in
        capitals (nothing written); where there is no marker yet, by writing an empty probe
        file at the root.
        """
        if self._case_sensitive is None:
            name = MARKER_NAME
            if not self.exists(name):
                name = f".autotx-case-probe-{uuid.uuid4().hex}"
                self.write_bytes(name, b"")
            try:
                self._case_sensitive = not self.exists(name.upper())
            finally:
                if name != MARKER_NAME:
                    self.remove_tree(name)
        return self._case_sensitive

    _case_sensitive: bool | None = None

    def write_bytes(self, relpath: str, data: bytes) -> None:
        """Write a small file in one go."""
        with self.open_write(relpath) as out:
            out.write(data)

    def read_bytes(self, relpath: str) -> bytes:
        """Read a small file in one go."""
        with self.open_read(relpath) as stream:
            return stream.read()

    # --- the marker: proof that this is the destination ---------------------------------

    def read_marker(self) -> dict[str, Any] | None:
        """The marker file's content, or None when there is no (readable, valid) marker."""
        try:
            data = json.loads(self.read_bytes(MARKER_NAME).decode("utf-8"))
        except (FileNotFoundError, ValueError):
            return None
        return data if isinstance(data, dict) and isinstance(data.get("id"), str) else None

    def write_marker(self, agent: str) -> dict[str, Any]:
        """Write a new marker (only where there is none); returns the marker in force."""
        marker = {"id": str(uuid.uuid4()), "created_by": agent,
                  "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                  "note": "written by autotx: marks this folder as a transfer destination; "
                          "do not remove (agents wait while it is missing)"}
        tmp = f"{MARKER_NAME}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            self.write_bytes(tmp, json.dumps(marker, indent=2).encode("utf-8"))
            self.sync(tmp)
            self.rename(tmp, MARKER_NAME)
        except DestinationNameTaken:  # another agent wrote one meanwhile: theirs counts
            self.remove_tree(tmp)
            return self.read_marker() or marker
        except DestinationError:
            self.remove_tree(tmp)
            raise
        return marker

    def check(self, expected_id: str | None = None) -> dict[str, Any] | None:
        """Raise unless this is the destination, reachable and writable.

        Parameters
        ----------
        expected_id : str, optional
            The marker id recorded when the destination was first used (None: first use).

        Returns
        -------
        marker : dict or None
            The marker found (None: there is none yet; the caller may write one).

        Raises
        ------
        DestinationMissing
            Not reachable (folder missing, server down, share absent).
        DestinationNotMountedError
            The marker is missing although one was written before, or names another
            destination: most likely the share is not mounted.
        DestinationAuth, DestinationReadOnly, DestinationPermission
            Credentials refused; not writable.
        """
        self._check_reachable()
        marker = self.read_marker()
        if marker is None and expected_id:
            raise DestinationNotMountedError(self.url, (
                f"its marker file {MARKER_NAME} is missing (this agent wrote one there, id "
                f"{expected_id}), so the share is probably not mounted"))
        if marker is not None and expected_id and marker["id"] != expected_id:
            raise DestinationNotMountedError(self.url, other_marker_reason(marker, expected_id))
        self._check_writable()
        return marker


def other_marker_reason(marker: dict[str, Any], expected: str) -> str:
    """Why a marker naming another destination is refused (one sentence)."""
    return (f"its marker file names destination {marker['id']} (made by "
            f"{marker.get('created_by', '?')}), but this agent delivers to {expected}: another "
            "share seems to be mounted here")


class TranslatingStream:
    """A binary stream whose failures are re-raised as typed destination errors.

    Wraps a transport's raw stream; ``translate(error)`` returns the exception to raise.
    """

    def __init__(self, raw: Any, translate: Callable[[BaseException], BaseException],
                 caught: tuple[type[BaseException], ...] = (OSError,)):
        self._raw, self._translate, self._caught = raw, translate, caught

    def _call(self, method: str, *args: Any) -> Any:
        try:
            return getattr(self._raw, method)(*args)
        except self._caught as error:
            raise self._translate(error) from None

    def write(self, data: Any) -> int:
        """Write all of ``data``; returns its length."""
        return self._call("write", data)

    def read(self, size: int = -1) -> bytes:
        """Read up to ``size`` bytes (all when negative)."""
        return self._call("read", size)

    def readinto(self, buffer: Any) -> int:
        """Read into ``buffer``; returns the number of bytes read."""
        return self._call("readinto", buffer)

    def flush(self) -> None:
        """Flush buffered data to the storage."""
        self._call("flush")

    def close(self) -> None:
        """Flush and close (a failure to flush is raised, typed)."""
        if self._raw.closed:
            return
        try:
            self._call("flush")
        finally:
            self._call("close")

    @property
    def closed(self) -> bool:
        return self._raw.closed

    def readable(self) -> bool:
        return self._raw.readable()

    def writable(self) -> bool:
        return self._raw.writable()

    def __enter__(self) -> TranslatingStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
