"""Opening the journal's database: SQLite pragmas, private files, errors by error code."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine

from autotx_lib.errors import JournalBusyError, JournalError


def create_private(path: Path) -> None:
    """Create a new journal file readable by its owner only (SQLite keeps this mode for
    its -wal and -shm files)."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))


def _sqlite_pragmas(busy_timeout_s: float, readonly: bool) -> Callable[[Any, Any], None]:
    def set_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        if readonly:
            cursor.execute("PRAGMA query_only=ON")  # a reader never writes, not even by mistake
        else:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()
    return set_pragmas


def make_engine(url: str, busy_timeout_s: float, readonly: bool) -> Engine:
    """The SQLAlchemy engine of a journal (SQLite: WAL, busy timeout; readers read only)."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": busy_timeout_s})
        event.listen(engine, "connect", _sqlite_pragmas(busy_timeout_s, readonly))
        return engine
    engine = create_engine(url, pool_pre_ping=True)
    if readonly:
        @event.listens_for(engine, "connect")
        def _read_only(dbapi_connection: Any, _record: Any) -> None:
            with dbapi_connection.cursor() as cursor:
                cursor.execute("SET default_transaction_read_only = on")
            dbapi_connection.commit()
    return engine


def explain_sqlite_error(context: Any, where: object) -> None:
    """Turn a locked or damaged SQLite journal into a clear JournalError (by error code)."""
    original = context.original_exception
    code = getattr(original, "sqlite_errorcode", None)
    if code is None:
        return
    primary = code & 0xFF
    if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        raise JournalBusyError(
            f"the journal {where} has been locked by another process for too long "
            "(a long query, a backup tool, or a database browser left open); close that "
            "program, then try again") from None
    if primary == sqlite3.SQLITE_READONLY:
        raise JournalError(
            f"the journal {where} was opened read only (or its file is not writable); "
            "only the agent and the commands that change something write to it") from None
    if primary in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        raise JournalError(
            f"the journal {where} is damaged ({original}). Move it aside (e.g. rename it "
            "to autotx.sqlite.damaged) and start the agent again: it adopts what is in "
            "managed/processing/ and copies it again, so nothing is lost") from None
