"""A destination on an SMB share, written directly (no mount, no root) with smbprotocol.

Failures are classified by the NT status code the server answered (the protocol's own
error type), never by message text: a refused logon is :class:`DestinationAuth`, an
absent share or a server that cannot be reached :class:`DestinationMissing`, a full disk
:class:`DestinationFullError`, access denied :class:`DestinationPermission`, a name
collision on rename :class:`DestinationNameTaken`. After a lost connection the next call
connects again, so a transfer resumes once the server is back.

Needs the ``smb`` extra: ``pip install "autotx_lib[smb]"``.
"""

from __future__ import annotations

import errno
import logging
import stat as stat_module
import threading
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any, BinaryIO, TypeVar

from autotx_lib.errors import (
    DestinationAuth,
    DestinationError,
    DestinationFullError,
    DestinationMissing,
    DestinationNameTaken,
    DestinationPermission,
    DestinationReadOnly,
    MissingDependencyError,
)
from autotx_lib.transfer.destinations.base import (
    Destination,
    EntryInfo,
    TranslatingStream,
    clean_relpath,
)

T = TypeVar("T")
log = logging.getLogger(__name__)
CHUNK = 2 * 1024 * 1024  # bytes per SMB2 READ / WRITE request (2 MiB x 8 measured best)
IN_FLIGHT = 8  # requests sent before the first answer is awaited: client and server overlap

# NT status codes (MS-ERREF 2.3) -> the destination error they mean.
_NOT_FOUND = {0xC0000034, 0xC000003A, 0xC000000F, 0xC0000225}  # name, path, file, not found
_BY_STATUS: dict[int, tuple[type[DestinationError], str]] = {
    0xC000007F: (DestinationFullError, "disk full"),                    # STATUS_DISK_FULL
    0xC0000044: (DestinationFullError, "quota exceeded"),               # STATUS_QUOTA_EXCEEDED
    0xC00000A2: (DestinationReadOnly, "the share is write-protected"),  # MEDIA_WRITE_PROTECTED
    0xC0000022: (DestinationPermission, "access denied"),               # STATUS_ACCESS_DENIED
    0xC00000CA: (DestinationPermission, "network access denied"),       # NETWORK_ACCESS_DENIED
    0xC000006D: (DestinationAuth, "logon failure: user name or password refused"),
    0xC000006A: (DestinationAuth, "wrong password"),                    # STATUS_WRONG_PASSWORD
    0xC0000071: (DestinationAuth, "password expired"),
    0xC0000072: (DestinationAuth, "account disabled"),
    0xC0000234: (DestinationAuth, "account locked out"),
    0xC000006E: (DestinationAuth, "account restriction"),
    0xC00000CC: (DestinationMissing, "no such share on the server"),  # STATUS_BAD_NETWORK_NAME
    0xC00000C9: (DestinationMissing, "the share was removed"),       # NETWORK_NAME_DELETED
    0xC0000203: (DestinationMissing, "the server ended the session"),  # USER_SESSION_DELETED
    0xC0000035: (DestinationNameTaken, "the name is taken"),           # OBJECT_NAME_COLLISION
    0xC0000101: (DestinationNameTaken, "the name is taken"),           # DIRECTORY_NOT_EMPTY
}
_LOST_CONNECTION = {DestinationMissing}


def _smb():
    """The smbprotocol modules, or an error that says how to install them."""
    try:
        import smbclient
        import smbclient.shutil
        from smbprotocol import exceptions
    except ImportError as error:
        raise MissingDependencyError(
            f"{error}\n\nSMB destinations need smbprotocol: "
            'python -m pip install "autotx_lib[smb]"') from error
    return smbclient, exceptions


def _close_cache(cache: dict[str, Any]) -> None:
    """Close the connections in one smbclient connection cache (errors: already gone)."""
    smbclient, _ = _smb()
    try:
        smbclient.reset_connection_cache(fail_on_error=False, connection_cache=cache)
    except Exception as error:  # noqa: BLE001 - a dead connection may fail to close
        log.debug("closing an SMB connection: %s", error)


def _status(error: BaseException) -> int | None:
    """The NT status of an smbprotocol error (SMBOSError or a response exception)."""
    for attribute in ("ntstatus", "status"):
        value = getattr(error, attribute, None)
        if isinstance(value, int):
            return value
    return None


class SMBDestination(Destination):
    """A folder on an SMB share, e.g. ``smb://alice@server/share/microscopy``.

    Parameters
    ----------
    server, share : str
        The server (name or address) and the share.
    path : str
        A folder inside the share (``/``-separated; ``""``: the share's top).
    username, password : str
        The credentials (see :func:`autotx_lib.transfer.destinations.url.open_destination`
        for where the password comes from; it is never logged or shown).
    port : int
        The server's port (445).
    timeout : float
        Seconds to wait for a connection.

    Notes
    -----
    Each thread uses a connection of its own. SMB has no "sync the volume": every file
    written is flushed on the server when its stream is closed, so :meth:`sync` has
    nothing left to do.
    """

    def __init__(self, server: str, share: str, path: str = "", *, username: str,
                 password: str, port: int = 445, timeout: float = 30.0):
        self.server, self.share, self.port = server, share, port
        self.folder = clean_relpath(path)
        self.username = username
        self._password = password
        self._timeout = timeout
        # One connection per thread: smbprotocol does not wait for credits, so threads
        # sharing a connection fail under load; and Samba serves each connection in its
        # own process, so parallel copies use the server's cores too.
        self._local = threading.local()
        self._caches: list[tuple[threading.Thread, dict[str, Any]]] = []
        self._generation = 0
        self._lock = threading.Lock()
        user = f"{username}@" if username else ""
        where = f":{port}" if port != 445 else ""
        self.url = f"smb://{user}{server}{where}/{share}" + (f"/{self.folder}" if self.folder
                                                             else "")

    def __repr__(self) -> str:  # never shows the password
        return f"SMBDestination({self.url!r})"

    # --- connection and error translation ---------------------------------------------

    def _unc(self, relpath: str) -> str:
        parts = [p for p in (self.folder, clean_relpath(relpath)) if p]
        tail = "\\".join(parts).replace("/", "\\")
        return f"\\\\{self.server}\\{self.share}" + (f"\\{tail}" if tail else "")

    @property
    def _cache(self) -> dict[str, Any]:
        """This thread's connection cache (a new one after :meth:`close`)."""
        local = self._local
        if getattr(local, "generation", None) != self._generation:
            local.cache, local.generation, local.connected = {}, self._generation, False
            with self._lock:  # connections of finished threads (a past copy's) are closed
                ended = [c for t, c in self._caches if not t.is_alive()]
                self._caches = [(t, c) for t, c in self._caches if t.is_alive()]
                self._caches.append((threading.current_thread(), local.cache))
            for cache in ended:
                _close_cache(cache)
        return local.cache

    def _connect(self) -> None:
        cache = self._cache
        if self._local.connected:
            return
        smbclient, _ = _smb()
        from smbprotocol.connection import Connection

        key = f"{self.server.lower()}:{self.port}"
        if key not in cache or not cache[key].transport.connected:
            # A client GUID of its own: Samba hands a new connection with a GUID it knows
            # to the process already serving that GUID, and that hand-over stalled the
            # session setup of parallel connections here (smbclient uses one GUID for all).
            connection = Connection(uuid.uuid4(), self.server, self.port)
            connection.connect(timeout=self._timeout)
            cache[key] = connection
        smbclient.register_session(self.server, username=self.username,
                                   password=self._password, port=self.port,
                                   connection_cache=cache, connection_timeout=self._timeout)
        self._local.connected = True

    def close(self) -> None:
        """Close the connections (the next call connects again)."""
        with self._lock:
            self._generation += 1
            caches, self._caches = self._caches, []
        for _, cache in caches:
            _close_cache(cache)

    def classify(self, error: BaseException, relpath: str = "") -> BaseException:
        """The typed destination error for an smbprotocol (or socket) error.

        A missing entry becomes FileNotFoundError; a lost or refused connection
        DestinationMissing (and the connection is dropped, so the next call reconnects).
        """
        _, exceptions = _smb()
        where = self.url + (f"/{clean_relpath(relpath)}" if relpath else "")
        status = _status(error)
        if status in _NOT_FOUND:
            return FileNotFoundError(errno.ENOENT, "no such file or folder", where)
        if status in _BY_STATUS:
            kind, reason = _BY_STATUS[status]
            if kind is DestinationFullError:
                return DestinationFullError(where)
            if kind in _LOST_CONNECTION:
                self._forget_connection()
            return kind(self.url if kind is DestinationMissing else where, reason)
        if isinstance(error, exceptions.SMBAuthenticationError):
            return DestinationAuth(self.url, "the server refused the logon")
        if isinstance(error, exceptions.SMBOSError):
            return DestinationError(where, f"the server answered NT status 0x{status or 0:08x}")
        refused = isinstance(error, ValueError) and isinstance(error.__cause__, OSError)
        if refused or isinstance(error, (OSError, exceptions.SMBException)):
            # socket errors, a closed connection, "Failed to connect" (a ValueError whose
            # cause is the socket error): the server is away
            self._forget_connection()
            return DestinationMissing(self.url, f"the server cannot be reached "
                                      f"({type(error).__name__})")
        return error

    def _forget_connection(self) -> None:
        try:
            self.close()
        except Exception as error:  # noqa: BLE001 - a dead connection may fail to close
            log.debug("dropping a dead SMB connection to %s: %s", self.url, error)

    def _run(self, relpath: str, call: Callable[..., T], *args: Any, unc: str | None = None,
             **kwargs: Any) -> T:
        """Run one smbclient call on ``relpath`` (or ``unc``), with errors translated."""
        _, exceptions = _smb()
        unc = unc or self._unc(relpath)
        try:
            self._connect()
            return call(unc, *args, connection_cache=self._cache, port=self.port, **kwargs)
        except (OSError, ValueError, exceptions.SMBException) as error:
            translated = self.classify(error, relpath)
            if translated is error:
                raise
            raise translated from None

    def _stream(self, raw: Any, relpath: str) -> BinaryIO:
        _, exceptions = _smb()
        return TranslatingStream(raw, lambda e: self.classify(e, relpath),  # type: ignore
                                 caught=(OSError, ValueError, exceptions.SMBException))

    # --- the protocol ---------------------------------------------------------------------

    def stat(self, relpath: str) -> EntryInfo:
        smbclient, _ = _smb()
        info = self._run(relpath, smbclient.stat)
        return EntryInfo(info.st_size, info.st_mtime_ns, stat_module.S_ISDIR(info.st_mode))

    def listdir(self, relpath: str = "") -> list[str]:
        smbclient, _ = _smb()
        return sorted(self._run(relpath, smbclient.listdir))

    def make_dirs(self, relpath: str) -> None:
        smbclient, _ = _smb()
        self._check_reachable()  # never re-create the destination's own folder
        self._run(relpath, smbclient.makedirs, exist_ok=True)

    def open_write(self, relpath: str) -> BinaryIO:
        """A stream writing the file on the server, several writes in flight; closing it
        flushes it to the server's disk (SMB2 FLUSH), so a closed file is durable."""
        smbclient, _ = _smb()
        raw = self._run(relpath, smbclient.open_file, mode="wb", buffering=0)
        return self._stream(PipelinedWriter(raw), relpath)

    def open_read(self, relpath: str) -> BinaryIO:
        """A stream reading the file from the server (no client-side cache), several
        reads in flight."""
        smbclient, _ = _smb()
        raw = self._run(relpath, smbclient.open_file, mode="rb", buffering=0)
        return self._stream(PipelinedReader(raw), relpath)

    def rename(self, src: str, dst: str) -> None:
        smbclient, _ = _smb()
        self._run(src, smbclient.rename, self._unc(dst))

    def remove_tree(self, relpath: str) -> None:
        smbclient, _ = _smb()
        try:
            info = self.stat(relpath)
        except FileNotFoundError:
            return
        if info.is_dir:
            self._run(relpath, smbclient.shutil.rmtree)
        else:
            self._run(relpath, smbclient.remove)

    def free_bytes(self) -> int:
        smbclient, _ = _smb()
        return self._run("", smbclient.stat_volume).caller_available_size

    def _check_reachable(self) -> None:
        smbclient, _ = _smb()
        try:  # a share the server does not have looks like a missing path (DFS lookup)
            self._run("", smbclient.stat, unc=f"\\\\{self.server}\\{self.share}")
        except FileNotFoundError:
            raise DestinationMissing(self.url, f"no such share {self.share!r} on the "
                                     "server") from None
        if not self.folder:
            return
        try:
            if not self.stat("").is_dir:
                raise DestinationMissing(self.url, "not a folder")
        except FileNotFoundError:
            raise DestinationMissing(self.url, f"no folder {self.folder!r} in the share "
                                     f"{self.share!r}") from None

    def _check_writable(self) -> None:
        """Write and remove a small probe file: a share's permissions show only then."""
        probe = f".autotx-probe-{threading.get_ident()}"
        self.write_bytes(probe, b"")
        self.remove_tree(probe)


class _Pipelined:
    """Requests on one open file with up to IN_FLIGHT sent ahead (smbclient's own file
    objects wait for each answer before sending the next request)."""

    def __init__(self, raw: Any):
        from smbclient._io import _chunk_size

        self._raw, self._fd, self._chunk_size = raw, raw.fd, _chunk_size
        self._pending: deque[tuple[Any, Callable[[Any], Any], int]] = deque()
        self._offset = 0

    def _send(self, message: Any, receive: Callable[[Any], Any], credits: int,
              size: int) -> None:
        request = self._fd.connection.send(
            message, sid=self._fd.tree_connect.session.session_id,
            tid=self._fd.tree_connect.tree_connect_id, credit_request=credits)
        self._pending.append((request, receive, size))

    def _chunk(self, length: int, operation: str) -> tuple[int, int]:
        """The next request's size (within the credits granted) and credits to ask for."""
        size, credits = self._chunk_size(self._fd.connection, min(length, CHUNK), operation)
        return size, max(credits, IN_FLIGHT * (CHUNK // 65536))

    def _drain(self) -> None:
        while self._pending:
            request, receive, _ = self._pending.popleft()
            receive(request)

    @property
    def closed(self) -> bool:
        return self._raw.closed

    def readable(self) -> bool:
        return self._raw.readable()

    def writable(self) -> bool:
        return self._raw.writable()


class PipelinedWriter(_Pipelined):
    """Write a file with several SMB2 WRITE requests in flight; ``close`` waits for
    them all, flushes the file on the server and closes it."""

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            size, credits = self._chunk(len(view) - done, "write")
            if size <= 0 or len(self._pending) >= IN_FLIGHT:
                self._complete_one()
                continue
            message, receive = self._fd.write(bytes(view[done:done + size]), offset=self._offset,
                                              send=False)
            self._send(message, receive, credits, size)
            self._offset += size
            done += size
        return done

    def _complete_one(self) -> None:
        request, receive, size = self._pending.popleft()
        written = receive(request)
        if written != size:
            raise OSError(errno.EIO, f"the server wrote {written} of {size} bytes")

    def flush(self) -> None:
        while self._pending:
            self._complete_one()
        if self._offset:
            self._fd.flush()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._pending.clear()
            self._raw.close()


class PipelinedReader(_Pipelined):
    """Read a file with several SMB2 READ requests in flight."""

    def __init__(self, raw: Any):
        super().__init__(raw)
        self._size = raw.fd.end_of_file
        self._left = b""

    def _fill(self) -> None:
        while len(self._pending) < IN_FLIGHT and self._offset < self._size:
            size, credits = self._chunk(self._size - self._offset, "read")
            if size <= 0:
                return
            message, receive = self._fd.read(self._offset, size, send=False)
            self._send(message, receive, credits, size)
            self._offset += size

    def _next(self) -> bytes:
        self._fill()
        if not self._pending:
            return b""
        request, receive, _ = self._pending.popleft()
        data = receive(request)
        self._fill()
        return data

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            parts = [self._left]
            while chunk := self._next():
                parts.append(chunk)
            self._left = b""
            return b"".join(parts)
        if not self._left:
            self._left = self._next()
        data, self._left = self._left[:size], self._left[size:]
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        memoryview(buffer).cast("B")[:len(data)] = data
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        try:
            self._drain()  # answers still on their way belong to this file
        finally:
            self._raw.close()


__all__ = ["SMBDestination"]
