"""A destination on an SMB share, written directly (no mount, no root) with smbprotocol.

Failures are classified by the NT status code the server answered (the protocol's own
error type), never by message text: a refused logon is :class:`DestinationAuth`, an
absent share or a server that cannot be reached :class:`DestinationMissing`, a full disk
:class:`DestinationFullError`, access denied :class:`DestinationPermission`, a name
collision on rename :class:`DestinationNameTaken`. After a lost connection the next call
connects again, so a transfer resumes once the server is back.

Speed: several READ / WRITE requests are in flight per file, one connection per thread;
the file data is neither copied in Python nor signed (every other request is), unless
the server requires signing or ``require_signing=True`` (see :func:`_connection_class`).
Every byte written is still read back from the server by the caller's verification.

Needs the ``smb`` extra: ``pip install "autotx_lib[smb]"``.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import select
import stat as stat_module
import struct
import threading
import time
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
from autotx_lib.transfer.names import windows_name_problem

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


class _UnexpectedAnswer(OSError):
    """The server answered, but not what the request asked for (a short READ or WRITE)."""


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


# The SMB2 header (MS-SMB2 2.2.1) and READ response (2.2.20) fields the transport reads.
_HEADER = struct.Struct("<4s4xIHxxIIQ")  # protocol, status, command, flags, next, message id
_READ_RESPONSE = struct.Struct("<xxBxI")  # data offset, data length (after the header)
_READ_HEAD = 64 + 16  # header and READ response up to its data
_SMB2_READ, _FLAG_SIGNED = 0x0008, 0x00000008


class _Sink:
    """A buffer a READ answer's data is received into, straight from the socket."""

    def __init__(self, size: int):
        self.view = memoryview(bytearray(size))
        self.length: int | None = None  # bytes received; None: the answer went the usual way


@functools.cache
def _connection_class() -> type:
    """smbprotocol's ``Connection`` with a data path that neither signs nor copies data.

    Signing: with signing negotiated as enabled but not required, smbprotocol signs
    nothing, and SMB 3.1.1 servers refuse an unsigned TREE_CONNECT. This class signs
    every request (so each answer to it is signed and checked too) except READ and
    WRITE: those carry the data, which autotx verifies by reading it back and comparing
    hashes, and signing them costs a MAC over every byte on both ends. A server that
    requires signing turns ``require_signing`` on during negotiation; then everything is
    signed and the data goes the usual (copying) way.

    Copies: smbprotocol builds each message as one byte string, so a 2 MiB WRITE is
    copied four times in Python and a READ answer five; at ~0.6 GB/s that was most of
    the client's CPU. Here a WRITE's data goes to the socket beside its message
    (``sendmsg``) and a READ answer's data is received straight into the reader's buffer
    (``recv_into``); :meth:`attach` hands either to the next message this thread sends.
    """
    from smbprotocol.connection import Connection
    from smbprotocol.header import Commands
    from smbprotocol.transport import Tcp

    data_commands = {Commands.SMB2_READ, Commands.SMB2_WRITE}

    class Transport(Tcp):
        # set by DataConnection.connect
        _attached: threading.local
        _sinks: dict[int, _Sink]  # READ message id -> where its data goes
        spare_sinks: list[_Sink]  # for the next reader: fresh buffers cost a memset

        def attach(self, extra: Any) -> None:
            """Data (a WRITE's payload) or a :class:`_Sink` (a READ's) for this thread's
            next message; ``None`` clears it."""
            self._attached.extra = extra

        def send(self, header: bytes) -> None:
            extra = getattr(self._attached, "extra", None)
            self._attached.extra = None
            payload = b"" if extra is None or isinstance(extra, _Sink) else extra
            size = len(header) + len(payload)
            if size > self.MAX_SIZE:
                raise ValueError(f"an SMB message of {size} bytes exceeds the transport's "
                                 f"{self.MAX_SIZE}")
            parts = [memoryview(struct.pack(">L", size)), memoryview(header)]
            if payload:
                parts.append(memoryview(payload).cast("B"))
            with self._sock_lock:
                if isinstance(extra, _Sink):  # before sending: the answer may come at once
                    self._sinks[_HEADER.unpack_from(header)[5]] = extra
                while parts:
                    sent = self._sock.sendmsg(parts)
                    while parts and sent >= len(parts[0]):
                        sent -= len(parts.pop(0))
                    if sent:
                        parts[0] = parts[0][sent:]

        def recv(self, timeout: float) -> bytes:
            prefix = bytearray(4)
            timeout = self._recv_into(memoryview(prefix), timeout)
            if timeout is None:
                return b""  # closed
            size = struct.unpack(">L", prefix)[0]
            head = bytearray(min(size, _READ_HEAD))
            timeout = self._recv_into(memoryview(head), timeout)
            if timeout is None:
                return b""
            sink = self._sink_for(head, size)
            if sink is not None:
                return self._recv_read(head, size, sink, timeout)
            frame = bytearray(size)
            frame[:len(head)] = head
            if self._recv_into(memoryview(frame)[len(head):], timeout) is None:
                return b""
            return bytes(frame)

        def _sink_for(self, head: bytearray, size: int) -> _Sink | None:
            """The sink of a successful, unsigned, single READ answer, if one waits."""
            if len(head) < _READ_HEAD:
                return None
            protocol, status, command, flags, next_command, message_id = \
                _HEADER.unpack_from(head)
            if (protocol != b"\xfeSMB" or command != _SMB2_READ or status or next_command
                    or flags & _FLAG_SIGNED or message_id not in self._sinks):
                return None
            offset, length = _READ_RESPONSE.unpack_from(head, 64)
            if (offset < _READ_HEAD or offset + length > size
                    or length > len(self._sinks[message_id].view)):
                return None
            return self._sinks.pop(message_id)

        def _recv_read(self, head: bytearray, size: int, sink: _Sink,
                       timeout: float) -> bytes:
            """The rest of a READ answer: its data into ``sink``; returns the header and
            READ response without the data, which is all smbprotocol needs of it."""
            offset, length = _READ_RESPONSE.unpack_from(head, 64)
            skip = memoryview(bytearray(max(offset - _READ_HEAD, size - offset - length)))
            for part in (skip[:offset - _READ_HEAD], sink.view[:length],
                         skip[:size - offset - length]):
                timeout = self._recv_into(part, timeout)
                if timeout is None:
                    return b""
            sink.length = length
            return bytes(head)

        def _recv_into(self, view: memoryview, timeout: float) -> float | None:
            """Fill ``view`` from the socket; the time left, or None when it closed.

            Waits at most ``timeout`` seconds for each piece (TimeoutError, on which
            smbprotocol sends an echo), as smbprotocol's own transport does.
            """
            done = 0
            while done < len(view):
                start = time.monotonic()
                with self._close_lock:
                    if not self.connected:
                        return None
                    ready = select.select([self._sock], [], [], max(timeout, 1))[0]
                    timeout -= time.monotonic() - start
                    if not ready:
                        raise TimeoutError(f"recv idle ({done}/{len(view)} bytes)")
                    try:
                        received = self._sock.recv_into(view[done:])
                    except OSError as error:
                        if error.errno not in (errno.ESHUTDOWN, errno.ECONNRESET,
                                               errno.ECONNABORTED):
                            raise
                        received = 0
                if not received:
                    self.close()
                    return None
                done += received
            return timeout

    class DataConnection(Connection):
        def connect(self, *args: Any, **kwargs: Any) -> Any:
            result = super().connect(*args, **kwargs)
            # smbprotocol makes its Tcp inside connect(); this one only adds methods and
            # state, and its receive thread picks the new recv up with the next message.
            # Another transport (a newer smbprotocol) keeps the usual, copying data path.
            if type(self.transport) is Tcp:
                self.transport.__class__ = Transport
                self.transport._attached = threading.local()
                self.transport._sinks = {}
                self.transport.spare_sinks = []
            return result

        def _send(self, messages, session_id=None, *args, force_signature=False, **kwargs):
            session = self.session_table.get(session_id)
            sign = (session is not None and session.signing_key is not None
                    and not session.encrypt_data
                    and any(m.COMMAND not in data_commands for m in messages))
            return super()._send(messages, session_id, *args,
                                 force_signature=force_signature or sign, **kwargs)

    return DataConnection


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
    require_signing : bool
        Sign every message, the file data's too. By default the data is signed only
        when the server requires it (as Windows and Samba's clients do); every other
        request is always signed, and the data is verified by reading it back.

    Notes
    -----
    Each thread uses a connection of its own; a thread started after another ended (the
    next copy's) takes over the ended one's connection, so at most as many connections
    stay open as threads ever ran at once, until :meth:`close`. SMB has no "sync the
    volume": every file written is flushed on the server (SMB2 FLUSH) when its stream
    closes, and :meth:`sync` waits for those flushes to be answered.
    """

    def __init__(self, server: str, share: str, path: str = "", *, username: str,
                 password: str, port: int = 445, timeout: float = 30.0,
                 require_signing: bool = False):
        self.server, self.share, self.port = server, share, port
        self.require_signing = require_signing
        self.folder = clean_relpath(path)
        self.username = username
        self._password = password
        self._timeout = timeout
        # One connection per thread: smbprotocol does not wait for credits, so threads
        # sharing a connection fail under load; and Samba serves each connection in its
        # own process, so parallel copies use the server's cores too.
        self._local = threading.local()
        self._caches: list[tuple[threading.Thread, dict[str, Any]]] = []
        self._idle: list[dict[str, Any]] = []  # caches of finished threads, for new ones
        self._closing: list[_Closing] = []  # written files whose FLUSH is not answered yet
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
        """This thread's connection cache: a finished thread's (a past copy's, its
        connection still open: logging on costs round trips and CPU on both ends), else
        a new one; a new one after :meth:`close` in any case."""
        local = self._local
        if getattr(local, "generation", None) != self._generation:
            with self._lock:
                self._idle += [c for t, c in self._caches if not t.is_alive()]
                self._caches = [(t, c) for t, c in self._caches if t.is_alive()]
                local.cache = self._idle.pop() if self._idle else {}
                self._caches.append((threading.current_thread(), local.cache))
            local.generation, local.connected = self._generation, False
        return local.cache

    def _connect(self) -> None:
        cache = self._cache
        if self._local.connected:
            return
        smbclient, _ = _smb()
        key = f"{self.server.lower()}:{self.port}"
        if key not in cache or not cache[key].transport.connected:
            # A client GUID of its own: Samba hands a new connection with a GUID it knows
            # to the process already serving that GUID, and that hand-over stalled the
            # session setup of parallel connections here (smbclient uses one GUID for all).
            connection = _connection_class()(uuid.uuid4(), self.server, self.port,
                                             require_signing=self.require_signing)
            connection.connect(timeout=self._timeout)
            cache[key] = connection
        smbclient.register_session(self.server, username=self.username,
                                   password=self._password, port=self.port,
                                   connection_cache=cache, connection_timeout=self._timeout)
        self._local.connected = True

    def close(self) -> None:
        """Close the connections (the next call connects again)."""
        try:
            self._settle(every_thread=True)
        except Exception as error:  # noqa: BLE001 - a file nobody synced or read back
            log.warning("%s: a written file did not reach the disk: %s", self.url, error)
        with self._lock:
            self._generation += 1
            caches = [c for _, c in self._caches] + self._idle
            self._caches, self._idle = [], []
        for cache in caches:
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
        if isinstance(error, _UnexpectedAnswer):  # the connection is fine
            return DestinationError(where, str(error))
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
             keep: str | None = None, **kwargs: Any) -> T:
        """Run one smbclient call on ``relpath`` (or ``unc``), with errors translated.

        The files this thread wrote are settled first (see :meth:`_settle`), but for
        ``keep``, which the caller settles itself.
        """
        _, exceptions = _smb()
        unc = unc or self._unc(relpath)
        self._settle(keep=keep)
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

    def _park(self, relpath: str, closing: _Closing) -> None:
        closing.relpath = relpath
        with self._lock:
            self._closing.append(closing)

    def _settle(self, keep: str | None = None, only: str | None = None,
                every_thread: bool = False) -> None:
        """Wait for the FLUSH and CLOSE answers of files written and closed (by this
        thread; every thread's), but ``keep`` (only ``only``); the first failure is
        raised, typed, after all were waited for."""
        me = threading.current_thread()
        with self._lock:
            due = [c for c in self._closing if (every_thread or c.thread is me)
                   and c.relpath != keep and only in (None, c.relpath)]
            self._closing = [c for c in self._closing if c not in due]
        failure: BaseException | None = None
        for closing in due:
            try:
                closing.settle()
            except Exception as error:  # noqa: BLE001 - classified below
                failure = failure or self.classify(error, closing.relpath)
        if failure is not None:
            raise failure

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
        """A stream writing the file on the server, several writes in flight.

        Closing it asks the server to flush the file to its disk (SMB2 FLUSH) and close
        it, without waiting: the answers are awaited, and a failure raised, when the
        file is read back (:meth:`open_read`'s stream closes), by this thread's next
        call, or by :meth:`sync`, whichever comes first. Reading the file back thus
        overlaps with the server's disk write. Others may read the file meanwhile.
        """
        smbclient, _ = _smb()
        raw = self._run(relpath, smbclient.open_file, mode="wb", buffering=0,
                        share_access="r")
        return self._stream(PipelinedWriter(
            raw, lambda closing: self._park(clean_relpath(relpath), closing)), relpath)

    def open_read(self, relpath: str) -> BinaryIO:
        """A stream reading the file from the server (no client-side cache), several
        reads in flight; closing it waits until the file, if this thread just wrote
        it, is on the server's disk (see :meth:`open_write`)."""
        smbclient, _ = _smb()
        key = clean_relpath(relpath)
        raw = self._run(relpath, smbclient.open_file, mode="rb", buffering=0,
                        share_access="w", keep=key)
        return self._stream(PipelinedReader(raw, lambda: self._settle(only=key)), relpath)

    def sync(self, relpath: str = "") -> None:
        """Wait until every file written (by any thread) is on the server's disk."""
        self._settle(every_thread=True)

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

    def name_problem(self, name: str) -> str | None:
        """SMB names follow Windows' rules (no ``:``, ``?``, ``*``..., no trailing dot)."""
        return windows_name_problem(name)

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
        # a name of its own: a probe left open (an interrupted check) never blocks the next
        probe = f".autotx-probe-{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.write_bytes(probe, b"")
        self.remove_tree(probe)


def _read_data(response: Any) -> bytes:
    """The data of a READ answer that smbprotocol received whole."""
    from smbprotocol.open import SMB2ReadResponse

    answer = SMB2ReadResponse()
    answer.unpack(response["data"].get_value())
    return answer["buffer"].get_value()


class _Closing:
    """A written file whose FLUSH and CLOSE were sent, their answers not awaited yet."""

    def __init__(self, relpath: str, raw: Any, answers: list[tuple[Any, Callable]]):
        self.relpath, self.thread = relpath, threading.current_thread()
        self._raw, self._answers = raw, answers  # the raw file object until it is closed

    def settle(self) -> None:
        """Wait for every answer; raise the first failure."""
        failure: BaseException | None = None
        for request, receive in self._answers:
            try:
                receive(request)
            except Exception as error:  # noqa: BLE001 - raised below, after the others
                failure = failure or error
        self._raw = None
        if failure is not None:
            raise failure


class _Pipelined:
    """Requests on one open file with up to IN_FLIGHT sent ahead (smbclient's own file
    objects wait for each answer before sending the next request)."""

    _closed = False

    def __init__(self, raw: Any):
        from smbclient._io import _chunk_size

        self._raw, self._fd, self._chunk_size = raw, raw.fd, _chunk_size
        self._pending: deque[tuple[Any, Any, int]] = deque()
        self._offset = 0
        tree = self._fd.tree_connect
        transport = self._fd.connection.transport
        # data beside the messages only where nothing signs or encrypts it (see
        # _connection_class); otherwise smbprotocol's own (copying) way
        self._direct = (hasattr(transport, "attach") and not tree.session.signing_required
                        and not tree.session.encrypt_data and not tree.encrypt_data)

    def _send(self, message: Any, extra: Any, credits: int) -> Any:
        """Send ``message`` with ``extra`` attached (see ``Transport.attach``)."""
        connection = self._fd.connection
        if self._direct:
            connection.transport.attach(extra)
        try:
            return connection.send(message, sid=self._fd.tree_connect.session.session_id,
                                   tid=self._fd.tree_connect.tree_connect_id,
                                   credit_request=credits)
        finally:
            if self._direct:
                connection.transport.attach(None)

    def _chunk(self, length: int, operation: str) -> tuple[int, int]:
        """The next request's size (within the credits granted) and credits to ask for."""
        size, credits = self._chunk_size(self._fd.connection, min(length, CHUNK), operation)
        return size, max(credits, IN_FLIGHT * (CHUNK // 65536))

    @property
    def closed(self) -> bool:
        return self._closed or self._raw.closed

    def readable(self) -> bool:
        return self._raw.readable()

    def writable(self) -> bool:
        return self._raw.writable()


class PipelinedWriter(_Pipelined):
    """Write a file with several SMB2 WRITE requests in flight; :meth:`flush` waits for
    their answers; :meth:`close` too, then sends FLUSH and CLOSE and hands their
    answers to ``park`` (a :class:`_Closing`) instead of waiting for them.

    The data of each request goes from the caller's buffer to the socket before
    :meth:`write` returns, so the caller may reuse its buffer at once.
    """

    def __init__(self, raw: Any, park: Callable[[_Closing], None]):
        super().__init__(raw)
        self._park = park

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            size, credits = self._chunk(len(view) - done, "write")
            if size <= 0 or len(self._pending) >= IN_FLIGHT:
                self._complete_one()
                continue
            part = view[done:done + size]
            if self._direct:
                message, receive = self._fd.write(b"", offset=self._offset, send=False)
                message["length"] = size
                message["buffer"].size = 0  # the data follows the message on the wire
                request = self._send(message, part, credits)
            else:
                message, receive = self._fd.write(part.tobytes(), offset=self._offset,
                                                  send=False)
                request = self._send(message, None, credits)
            self._pending.append((request, receive, size))
            self._offset += size
            done += size
        return done

    def _complete_one(self) -> None:
        request, receive, size = self._pending.popleft()
        written = receive(request)
        if written != size:
            raise _UnexpectedAnswer(errno.EIO, f"the server wrote {written} of {size} bytes")

    def flush(self) -> None:
        while self._pending:
            self._complete_one()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.flush()
            answers = []
            if self._offset:  # on the server's disk before the file counts as written
                message, receive = self._fd.flush(send=False)
                answers.append((self._send(message, None, 1), receive))
            message, receive = self._fd.close(send=False)
            answers.append((self._send(message, None, 1), receive))
        except BaseException:
            self._pending.clear()
            self._raw.close()
            raise
        self._park(_Closing("", self._raw, answers))


class PipelinedReader(_Pipelined):
    """Read a file with several SMB2 READ requests in flight, each answer's data
    received into a buffer of this reader's (no copies but the one :meth:`read` returns).
    """

    def __init__(self, raw: Any, on_close: Callable[[], None] = lambda: None):
        super().__init__(raw)
        self._on_close = on_close
        self._size = raw.fd.end_of_file
        self._free: list[_Sink] = []
        if self._direct:
            spare = self._fd.connection.transport.spare_sinks
            for _ in range(min(IN_FLIGHT, -(-self._size // CHUNK))):
                self._free.append(spare.pop() if spare else _Sink(CHUNK))
        self._left = memoryview(b"")  # what read() has not returned yet of one answer
        self._current: _Sink | None = None  # the buffer _left is in

    def _fill(self) -> None:
        while len(self._pending) < IN_FLIGHT and self._offset < self._size:
            if self._direct and not self._free:
                return
            size, credits = self._chunk(self._size - self._offset, "read")
            if size <= 0:
                return
            message, receive = self._fd.read(self._offset, size, send=False)
            sink = self._free.pop() if self._direct else None
            if sink is not None:
                sink.length = None
            request = self._send(message, sink, credits)
            self._pending.append((request, (receive, sink, self._offset), size))
            self._offset += size

    def _next(self) -> memoryview:
        """The next answer's data (empty at the end of the file)."""
        if self._current is not None:  # its data has all been returned: reuse it
            self._free.append(self._current)
            self._current = None
        self._fill()
        if not self._pending:
            return memoryview(b"")
        request, (receive, sink, offset), size = self._pending.popleft()
        if sink is None:
            data = memoryview(receive(request))
        else:
            self._current = sink
            response = self._fd.connection.receive(request)  # raises on an error status
            data = sink.view[:sink.length] if sink.length is not None else \
                memoryview(_read_data(response))  # the answer came the usual way
        if len(data) != size:  # the answers after it would be put at the wrong offsets
            raise _UnexpectedAnswer(errno.EIO, f"the server returned {len(data)} of {size} bytes at "
                          f"offset {offset}: the file changed while it was read")
        self._fill()
        return data

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            parts = []
            while chunk := self.read(CHUNK):
                parts.append(chunk)
            return b"".join(parts)
        if not self._left:
            self._left = self._next()
        data, self._left = self._left[:size], self._left[size:]
        return data.tobytes()

    def readinto(self, buffer: Any) -> int:
        target = memoryview(buffer).cast("B")
        if not self._left:
            self._left = self._next()
        count = min(len(target), len(self._left))
        target[:count] = self._left[:count]
        self._left = self._left[count:]
        return count

    def flush(self) -> None:
        pass

    def close(self) -> None:
        try:
            while self._pending:  # answers still on their way belong to this file
                self._fd.connection.receive(self._pending.popleft()[0])
            if self._current is not None:
                self._free.append(self._current)
            if self._direct:  # buffers no answer is on its way into any more
                self._fd.connection.transport.spare_sinks.extend(self._free)
        finally:
            self._free, self._current = [], None
            self._raw.close()
        self._on_close()


__all__ = ["SMBDestination"]
