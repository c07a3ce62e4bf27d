"""The journal: the single source of truth for datasets, files, events and agent sessions.

SQLAlchemy 2 Core over SQLite (WAL) by default, PostgreSQL for a facility-wide journal;
one schema for both. Every state change of a dataset is written here before and after
the filesystem step it describes, so an agent killed at any instant resumes correctly.
Status is read from here, never from the agent's memory.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import sqlite3
import stat
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine, Row, make_url
from sqlalchemy.exc import SQLAlchemyError

from autotx_lib.errors import JournalBusyError, JournalError

SCHEMA_VERSION = 1

metadata = MetaData()

datasets = Table(
    "datasets", metadata,
    Column("id", Integer, primary_key=True),
    Column("user", String(255), nullable=False),
    Column("name", String(255), nullable=False),
    Column("stamp", String(32), nullable=False),
    Column("state", String(32), nullable=False, index=True),
    Column("incoming_path", Text, nullable=False),
    Column("processing_path", Text, nullable=False),
    Column("tmp_path", Text),
    Column("dest_path", Text),
    Column("final_path", Text),  # done/, error/ or unmatched/ location of the source
    Column("algorithm", String(16), nullable=False),
    Column("total_files", Integer, nullable=False, default=0),
    Column("total_bytes", BigInteger, nullable=False, default=0),
    Column("copied_files", Integer, nullable=False, default=0),
    Column("copied_bytes", BigInteger, nullable=False, default=0),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", DateTime),
    Column("error", Text),
    Column("manifest_path", Text),
    Column("manifest_digest", String(128)),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Column("started_at", DateTime),
    Column("finished_at", DateTime),
)

files = Table(
    "files", metadata,
    Column("id", Integer, primary_key=True),
    Column("dataset_id", Integer, ForeignKey("datasets.id"), nullable=False),
    Column("relpath", Text, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("mtime_ns", BigInteger, nullable=False),
    Column("digest", String(128)),
    Column("verified", Boolean, nullable=False, default=False),
    Column("copies", Integer, nullable=False, default=0),
    UniqueConstraint("dataset_id", "relpath"),
)
Index("files_by_dataset", files.c.dataset_id, files.c.verified)

events = Table(
    "events", metadata,
    Column("id", Integer, primary_key=True),
    Column("at", DateTime, nullable=False, index=True),
    Column("dataset_id", Integer, ForeignKey("datasets.id")),
    Column("level", String(8), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("message", Text, nullable=False),
)

sessions = Table(
    "sessions", metadata,
    Column("id", Integer, primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("version", String(32), nullable=False),
    Column("started_at", DateTime, nullable=False),
    Column("heartbeat_at", DateTime, nullable=False),
    Column("ended_at", DateTime),
    Column("clean", Boolean, nullable=False, default=False),
    Column("state", String(32), nullable=False, default="idle"),
    Column("state_reason", Text),
)

outbox = Table(
    "outbox", metadata,
    Column("id", Integer, primary_key=True),
    Column("created_at", DateTime, nullable=False),
    Column("kind", String(32), nullable=False),  # e.g. transfer-finished, admin-error
    Column("recipient", Text, nullable=False),
    Column("subject", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", DateTime),
    Column("sent_at", DateTime, index=True),
    Column("error", Text),
)

jobs = Table(
    "jobs", metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(32), nullable=False),  # e.g. omero-import, plate-qc
    Column("dataset_id", Integer, ForeignKey("datasets.id")),
    Column("state", String(16), nullable=False, index=True),  # see JOB_STATES
    Column("payload", Text, nullable=False, default="{}"),  # JSON: what the job needs
    Column("result", Text),  # JSON: what it produced (e.g. OMERO ids)
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", DateTime),
    Column("created_at", DateTime, nullable=False),
    Column("started_at", DateTime),
    Column("finished_at", DateTime),
    Column("duration_s", Float),
    Column("error", Text),
)
JOB_STATES = ("created", "started", "finished", "error", "cancelled")

settings = Table(
    "settings", metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", DateTime, nullable=False),
)

# The states a dataset goes through (see ARCHITECTURE.md, "The folder lifecycle").
CLAIMING = "claiming"          # about to be moved from incoming/ to processing/
QUEUED = "queued"              # in processing/, waiting for (another) copy attempt
COPYING = "copying"            # files being copied into the destination's tmp area
DELIVERING = "delivering"      # verified in tmp; the final rename is about to happen
DELIVERED = "delivered"        # whole at the destination; the source still in processing/
DONE = "done"                  # the source rests in managed/done/ (grace)
UNMATCHING = "unmatching"      # about to move to managed/unmatched/
UNMATCHED = "unmatched"
QUARANTINING = "quarantining"  # about to move to managed/error/
ERROR = "error"
VANISHED = "vanished"          # the folder disappeared before the agent owned it
ACTIVE_STATES = (CLAIMING, QUEUED, COPYING, DELIVERING, DELIVERED, UNMATCHING, QUARANTINING)
FINAL_STATES = (DONE, UNMATCHED, ERROR, VANISHED)


def utcnow() -> dt.datetime:
    """Naive UTC now (both SQLite and PostgreSQL store it the same way)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _create_private(path: Path) -> None:
    """Create a new journal file readable by its owner only (SQLite keeps this mode for
    its -wal and -shm files)."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))


def _sqlite_pragmas(busy_timeout_s: float):
    def set_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()
    return set_pragmas


class Journal:
    """Queries and updates over the journal database.

    Parameters
    ----------
    url : str
        A SQLAlchemy URL, e.g. ``sqlite:////data/managed/autotx.sqlite`` or
        ``postgresql+psycopg://user@host/autotx``.
    busy_timeout_s : float
        How long a SQLite journal locked by another process is waited for before
        :class:`~autotx_lib.errors.JournalBusyError` is raised.

    Examples
    --------
    >>> j = Journal("sqlite://")          # in memory
    >>> j.log("info", "note", "hello")
    >>> j.recent_events(1)[0].message
    'hello'
    """

    def __init__(self, url: str, *, busy_timeout_s: float = 30.0):
        self.url = url
        self.path: Path | None = None  # the SQLite file, if the journal is one
        self._identity: tuple[int, int] | None = None
        try:
            if url.startswith("sqlite"):
                database = make_url(url).database
                if database and database != ":memory:":
                    self.path = Path(database)
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    _create_private(self.path)
                self.engine: Engine = create_engine(url, connect_args={"timeout": busy_timeout_s})
                event.listen(self.engine, "connect", _sqlite_pragmas(busy_timeout_s))
            else:
                self.engine = create_engine(url, pool_pre_ping=True)
            event.listen(self.engine, "handle_error", self._explain_error)
            self._create_schema()
        except JournalError:
            raise
        except (SQLAlchemyError, OSError) as error:
            raise JournalError(
                f"cannot open the journal at {self._safe_url()}: {error.__class__.__name__}: "
                f"{error}. Check the `journal` URL in the config and that the folder or "
                "database server is reachable."
            ) from None
        if self.path is not None:
            st = self.path.stat()
            self._identity = (st.st_dev, st.st_ino)

    def _explain_error(self, context: Any) -> None:
        """Turn a locked or damaged SQLite journal into a clear JournalError (by error code)."""
        original = context.original_exception
        code = getattr(original, "sqlite_errorcode", None)
        if code is None:
            return
        primary = code & 0xFF
        where = self.path or self._safe_url()
        if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            raise JournalBusyError(
                f"the journal {where} has been locked by another process for too long "
                "(a long query, a backup tool, or a database browser left open); close that "
                "program, then try again") from None
        if primary in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
            raise JournalError(
                f"the journal {where} is damaged ({original}). Move it aside (e.g. rename it "
                "to autotx.sqlite.damaged) and start the agent again: it adopts what is in "
                "managed/processing/ and copies it again, so nothing is lost") from None

    def protect(self) -> None:
        """Make a SQLite journal readable by its owner only (it holds addresses and mail)."""
        if self.path is None:
            return
        for path in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm")):
            try:
                mode = stat.S_IMODE(path.stat().st_mode)
                if mode & 0o077:
                    path.chmod(mode & 0o700)
            except OSError:
                continue  # not there (yet), or not ours: nothing to tighten

    def check_unchanged(self) -> None:
        """Raise JournalError when the SQLite file was deleted or replaced under us.

        An agent that went on writing into a deleted journal would record deliveries
        nobody can ever read; it stops instead, and the next start adopts its work.
        """
        if self.path is None or self._identity is None:
            return
        try:
            st = self.path.stat()
            current = (st.st_dev, st.st_ino)
        except OSError:
            current = None
        if current != self._identity:
            raise JournalError(
                f"the journal {self.path} was deleted or replaced while the agent ran; the "
                "agent stops. Start it again: it adopts the datasets left in "
                "managed/processing/ and copies them again, so nothing is lost")

    def _create_schema(self) -> None:
        """Create missing tables; another process doing the same at once is not an error."""
        for attempt in range(5):
            try:
                metadata.create_all(self.engine)
                self._set_default("schema_version", str(SCHEMA_VERSION))
                return
            except SQLAlchemyError as error:
                text = str(error).lower()
                racing = any(word in text for word in ("already exists", "locked", "unique",
                                                       "duplicate"))
                if not racing or attempt == 4:
                    raise
                time.sleep(0.1 * (attempt + 1))

    def _safe_url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True) if hasattr(self, "engine") \
            else self.url.split("@")[-1]

    def close(self) -> None:
        """Release the database connections."""
        self.engine.dispose()

    # --- datasets ---------------------------------------------------------------------

    def add_dataset(self, **values: Any) -> int:
        """Insert a dataset row; returns its id."""
        now = utcnow()
        values.setdefault("created_at", now)
        values.setdefault("updated_at", now)
        with self.engine.begin() as conn:
            return conn.execute(insert(datasets).values(**values)).inserted_primary_key[0]

    def update_dataset(self, dataset_id: int, **values: Any) -> None:
        """Update columns of one dataset row (``updated_at`` is set too)."""
        values["updated_at"] = utcnow()
        with self.engine.begin() as conn:
            conn.execute(update(datasets).where(datasets.c.id == dataset_id).values(**values))

    def dataset(self, dataset_id: int) -> Row:
        """One dataset row by id."""
        with self.engine.connect() as conn:
            row = conn.execute(select(datasets).where(datasets.c.id == dataset_id)).first()
        if row is None:
            raise JournalError(f"no dataset with id {dataset_id} in the journal")
        return row

    def datasets_in(self, states: Iterable[str]) -> list[Row]:
        """Datasets whose state is one of ``states``, oldest first."""
        query = select(datasets).where(datasets.c.state.in_(list(states))).order_by(datasets.c.id)
        with self.engine.connect() as conn:
            return list(conn.execute(query))

    def all_datasets(self, limit: int | None = None) -> list[Row]:
        """Datasets, newest first."""
        query = select(datasets).order_by(datasets.c.id.desc())
        if limit:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            return list(conn.execute(query))

    def known_processing_paths(self) -> set[str]:
        """Processing paths of every dataset the journal knows."""
        with self.engine.connect() as conn:
            return {r[0] for r in conn.execute(select(datasets.c.processing_path))}

    def known_incoming_paths(self) -> set[str]:
        """Incoming paths of datasets the agent is working on (not finished)."""
        query = select(datasets.c.incoming_path).where(datasets.c.state.in_(ACTIVE_STATES))
        with self.engine.connect() as conn:
            return {r[0] for r in conn.execute(query)}

    # --- files ------------------------------------------------------------------------

    def add_files(self, dataset_id: int, entries: Sequence[tuple[str, int, int]]) -> None:
        """Record the files of a dataset: (relpath, size, mtime_ns) each."""
        rows = [{"dataset_id": dataset_id, "relpath": r, "size": s, "mtime_ns": m,
                 "verified": False, "copies": 0} for r, s, m in entries]
        with self.engine.begin() as conn:
            for start in range(0, len(rows), 5000):
                conn.execute(insert(files), rows[start:start + 5000])

    def files_of(self, dataset_id: int, limit: int | None = None) -> list[Row]:
        """The file rows of a dataset (all, or the first ``limit``), in path order."""
        query = select(files).where(files.c.dataset_id == dataset_id).order_by(files.c.relpath)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            return list(conn.execute(query))

    def mark_verified(self, dataset_id: int, results: Sequence[dict[str, Any]],
                      copied_bytes: int, copied_files: int) -> None:
        """Record verified files in one transaction, with the dataset's progress.

        Each result has ``relpath``, ``digest``, ``size``, ``mtime_ns`` and ``copies``.
        """
        statement = (update(files)
                     .where(files.c.dataset_id == dataset_id)
                     .where(files.c.relpath == _bind("relpath"))
                     .values(digest=_bind("digest"), size=_bind("size"),
                             mtime_ns=_bind("mtime_ns"), verified=True,
                             copies=files.c.copies + _bind("copies")))
        params = [{"b_" + k: v for k, v in r.items()} for r in results]
        with self.engine.begin() as conn:
            if params:
                conn.execute(statement, params)
            conn.execute(update(datasets).where(datasets.c.id == dataset_id).values(
                copied_bytes=copied_bytes, copied_files=copied_files, updated_at=utcnow()))

    def reset_files(self, dataset_id: int, relpaths: Iterable[str] | None = None) -> None:
        """Mark files (all when ``relpaths`` is None) as not verified, to be copied again."""
        statement = update(files).where(files.c.dataset_id == dataset_id)
        if relpaths is not None:
            statement = statement.where(files.c.relpath.in_(list(relpaths)))
        with self.engine.begin() as conn:
            conn.execute(statement.values(verified=False, digest=None))

    def set_progress(self, dataset_id: int, copied_bytes: int, copied_files: int) -> None:
        """Update the live progress counters of a dataset."""
        with self.engine.begin() as conn:
            conn.execute(update(datasets).where(datasets.c.id == dataset_id).values(
                copied_bytes=copied_bytes, copied_files=copied_files, updated_at=utcnow()))

    # --- events -----------------------------------------------------------------------

    def log(self, level: str, kind: str, message: str, dataset_id: int | None = None) -> None:
        """Append an event (``level`` is info, warning or error)."""
        with self.engine.begin() as conn:
            conn.execute(insert(events).values(at=utcnow(), dataset_id=dataset_id, level=level,
                                               kind=kind, message=message))

    def recent_events(self, limit: int = 50, dataset_id: int | None = None) -> list[Row]:
        """Newest events first."""
        query = select(events).order_by(events.c.id.desc()).limit(limit)
        if dataset_id is not None:
            query = query.where(events.c.dataset_id == dataset_id)
        with self.engine.connect() as conn:
            return list(conn.execute(query))

    def has_event(self, kind: str, message: str) -> bool:
        """Whether an event of this kind and message was ever recorded (report things once)."""
        query = (select(func.count()).select_from(events)
                 .where(events.c.kind == kind).where(events.c.message == message))
        with self.engine.connect() as conn:
            return bool(conn.execute(query).scalar())

    # --- sessions and settings --------------------------------------------------------

    def start_session(self, host: str, pid: int, version: str) -> tuple[int, Row | None]:
        """Open an agent session; returns its id and the previous session if it ended uncleanly."""
        now = utcnow()
        with self.engine.begin() as conn:
            previous = conn.execute(select(sessions).order_by(sessions.c.id.desc()).limit(1)).first()
            new_id = conn.execute(insert(sessions).values(
                host=host, pid=pid, version=version, started_at=now, heartbeat_at=now,
                clean=False, state="starting")).inserted_primary_key[0]
        unclean = previous if previous is not None and previous.ended_at is None else None
        return new_id, unclean

    def heartbeat(self, session_id: int, state: str, reason: str | None = None) -> None:
        """Record that the agent is alive, and what it is doing."""
        with self.engine.begin() as conn:
            conn.execute(update(sessions).where(sessions.c.id == session_id).values(
                heartbeat_at=utcnow(), state=state, state_reason=reason))

    def end_session(self, session_id: int) -> None:
        """Mark a session as cleanly ended."""
        with self.engine.begin() as conn:
            conn.execute(update(sessions).where(sessions.c.id == session_id).values(
                ended_at=utcnow(), clean=True, state="stopped"))

    def last_session(self) -> Row | None:
        """The newest agent session, if any."""
        with self.engine.connect() as conn:
            return conn.execute(select(sessions).order_by(sessions.c.id.desc()).limit(1)).first()

    def get_setting(self, key: str) -> Any:
        """A JSON value stored under ``key`` (None when absent)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(settings.c.value).where(settings.c.key == key)).first()
        return json.loads(row[0]) if row else None

    def set_setting(self, key: str, value: Any) -> None:
        """Store a JSON value under ``key`` (persists across restarts)."""
        payload = json.dumps(value)
        with self.engine.begin() as conn:
            exists = conn.execute(select(settings.c.key).where(settings.c.key == key)).first()
            if exists:
                conn.execute(update(settings).where(settings.c.key == key)
                             .values(value=payload, updated_at=utcnow()))
            else:
                conn.execute(insert(settings).values(key=key, value=payload, updated_at=utcnow()))

    # --- mail outbox (a mail is never lost: it stays here until the SMTP server took it) --

    def queue_mail(self, kind: str, recipient: str, subject: str, body: str) -> int:
        """Put a message in the outbox; returns its id."""
        with self.engine.begin() as conn:
            return conn.execute(insert(outbox).values(
                created_at=utcnow(), kind=kind, recipient=recipient, subject=subject,
                body=body, attempts=0)).inserted_primary_key[0]

    def pending_mail(self, limit: int = 50) -> list[Row]:
        """Unsent messages whose next attempt is due, oldest first."""
        now = utcnow()
        query = (select(outbox).where(outbox.c.sent_at.is_(None))
                 .where((outbox.c.next_attempt_at.is_(None)) | (outbox.c.next_attempt_at <= now))
                 .order_by(outbox.c.id).limit(limit))
        with self.engine.connect() as conn:
            return list(conn.execute(query))

    def mail_sent(self, mail_id: int) -> None:
        """Mark a message as handed to the SMTP server."""
        with self.engine.begin() as conn:
            conn.execute(update(outbox).where(outbox.c.id == mail_id).values(
                sent_at=utcnow(), error=None))

    def mail_failed(self, mail_id: int, error: str, retry_in_seconds: float) -> None:
        """Record a failed delivery attempt and when to try again."""
        with self.engine.begin() as conn:
            conn.execute(update(outbox).where(outbox.c.id == mail_id).values(
                attempts=outbox.c.attempts + 1, error=error,
                next_attempt_at=utcnow() + dt.timedelta(seconds=retry_in_seconds)))

    def last_mail_of_kind(self, kind: str) -> Row | None:
        """The newest message of a kind (sent or not), for rate limits."""
        query = select(outbox).where(outbox.c.kind == kind).order_by(outbox.c.id.desc()).limit(1)
        with self.engine.connect() as conn:
            return conn.execute(query).first()

    # --- post-delivery jobs (run outside the copy path; see autotx_lib.pipelines) ------

    def add_job(self, kind: str, dataset_id: int | None, payload: dict[str, Any]) -> int:
        """Queue a job in state "created"; returns its id."""
        with self.engine.begin() as conn:
            return conn.execute(insert(jobs).values(
                kind=kind, dataset_id=dataset_id, state="created", payload=json.dumps(payload),
                attempts=0, created_at=utcnow())).inserted_primary_key[0]

    def update_job(self, job_id: int, **values: Any) -> None:
        """Update columns of a job (``payload``/``result`` given as dicts are stored as JSON)."""
        for key in ("payload", "result"):
            if isinstance(values.get(key), dict | list):
                values[key] = json.dumps(values[key])
        with self.engine.begin() as conn:
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(**values))

    def jobs_in(self, states: Iterable[str], kind: str | None = None) -> list[Row]:
        """Jobs whose state is one of ``states`` (optionally of one kind), oldest first."""
        query = select(jobs).where(jobs.c.state.in_(list(states))).order_by(jobs.c.id)
        if kind is not None:
            query = query.where(jobs.c.kind == kind)
        with self.engine.connect() as conn:
            return list(conn.execute(query))

    def recent_jobs(self, limit: int = 20) -> list[Row]:
        """Newest jobs first."""
        with self.engine.connect() as conn:
            return list(conn.execute(select(jobs).order_by(jobs.c.id.desc()).limit(limit)))

    def _set_default(self, key: str, value: str) -> None:
        if self.get_setting(key) is None:
            self.set_setting(key, value)


def _bind(name: str):
    from sqlalchemy import bindparam

    return bindparam("b_" + name)


__all__ = [
    "Journal", "datasets", "files", "events", "sessions", "settings", "outbox", "jobs", "JOB_STATES",
    "utcnow",
    "ACTIVE_STATES", "FINAL_STATES",
]
