"""The hub's own database: agents, their events and datasets, commands, tokens, audit.

SQLAlchemy 2 Core over SQLite (WAL; the default, no set-up) or PostgreSQL; one schema,
created and upgraded by Alembic migrations (:mod:`autotx_lib.hub.migrate`). Times are aware UTC; "last seen" and receive times
are the hub's clock, so an agent's wrong clock cannot make it look alive or dead.

Pushes are idempotent: an event is keyed by (agent id, the agent's journal event id), a
dataset by (agent id, dataset id), so a push repeated after a lost acknowledgement
changes nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Iterable
from contextlib import nullcontext
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    case,
    create_engine,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine, Row

from autotx_lib.hub import auth

metadata = MetaData()
UTC_TIME = DateTime(timezone=True)
ROW_ID = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements INTEGER only

tokens = Table(
    "tokens", metadata,
    Column("id", ROW_ID, primary_key=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("role", String(16), nullable=False),
    Column("agent_id", String(255)),  # agent tokens: the one agent id they may act as
    Column("hash", String(64), nullable=False, unique=True),
    Column("created_at", UTC_TIME, nullable=False),
    Column("revoked_at", UTC_TIME),
)

agents = Table(
    "agents", metadata,
    Column("id", String(255), primary_key=True),
    Column("first_seen", UTC_TIME, nullable=False),
    Column("last_seen", UTC_TIME, nullable=False),  # hub clock, at the last push of any kind
    Column("agent_time", UTC_TIME),  # the agent's clock at its last heartbeat
    Column("clock_offset_s", Float),  # agent clock minus hub clock at that heartbeat
    Column("interval_s", Float),  # how often the agent says it reports
    Column("state", String(32)),
    Column("detail", Text),
    Column("version", String(32)),
    Column("heartbeat", Text),  # JSON: the last heartbeat as sent
    Column("last_seq", BigInteger, nullable=False, default=0),
)

events = Table(
    "events", metadata,
    Column("id", ROW_ID, primary_key=True),  # hub order of arrival (for `after=` polling)
    Column("agent_id", String(255), nullable=False),
    Column("seq", BigInteger, nullable=False),  # the agent's journal event id: its order
    Column("at", UTC_TIME, nullable=False),  # agent clock
    Column("received_at", UTC_TIME, nullable=False),  # hub clock
    Column("dataset_id", Integer),
    Column("level", String(8), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("message", Text, nullable=False),
    UniqueConstraint("agent_id", "seq", name="events_once"),
)
Index("events_by_kind", events.c.kind)

datasets = Table(
    "datasets", metadata,
    Column("agent_id", String(255), primary_key=True),
    Column("dataset_id", Integer, primary_key=True),
    Column("user", String(255), nullable=False),
    Column("name", String(255), nullable=False),
    Column("state", String(32), nullable=False),
    Column("destination", String(255)),
    Column("total_files", Integer, nullable=False, default=0),
    Column("total_bytes", BigInteger, nullable=False, default=0),
    Column("copied_files", Integer, nullable=False, default=0),
    Column("copied_bytes", BigInteger, nullable=False, default=0),
    Column("attempts", Integer, nullable=False, default=0),
    Column("error", Text),
    Column("dest_path", Text),
    Column("final_path", Text),
    Column("deliveries", JSON),  # [[destinations]]: each destination's copy (list of dicts)
    Column("created_at", UTC_TIME),  # agent clock: claimed (ready)
    Column("started_at", UTC_TIME),
    Column("finished_at", UTC_TIME),
    Column("updated_at", UTC_TIME, nullable=False),  # agent clock: newer rows win
    Column("received_at", UTC_TIME, nullable=False),
)
Index("datasets_by_user", datasets.c.user)
Index("datasets_by_state", datasets.c.state)

# Pipeline runs and instrument sessions of each agent: the latest state the agent read
# (an upsert keyed by the agent's own id; a row read later, ``observed_at``, wins).
runs = Table(
    "runs", metadata,
    Column("agent_id", String(255), primary_key=True),
    Column("run_id", Integer, primary_key=True),
    Column("workflow", String(128), nullable=False),
    Column("version", String(64)),
    Column("dataset_id", Integer),
    Column("dataset_path", Text),
    Column("user", String(255)),
    Column("initiator", String(255)),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("max_attempts", Integer),
    Column("error", Text),
    Column("rerun_of", Integer),
    Column("created_at", UTC_TIME, nullable=False),  # agent clock
    Column("started_at", UTC_TIME),
    Column("finished_at", UTC_TIME),
    Column("duration_s", Float),
    Column("next_attempt_at", UTC_TIME),
    Column("observed_at", UTC_TIME, nullable=False),  # agent clock: when it read the row
    Column("received_at", UTC_TIME, nullable=False),
)
Index("runs_by_created", runs.c.created_at)
Index("runs_by_status", runs.c.status)

sessions = Table(
    "sessions", metadata,
    Column("agent_id", String(255), primary_key=True),
    Column("session_id", Integer, primary_key=True),
    Column("instrument", String(255), nullable=False),
    Column("user", String(255), nullable=False),
    Column("project", String(255)),
    Column("booking", String(255)),
    Column("note", Text),
    Column("started_by", String(32)),
    Column("started_at", UTC_TIME, nullable=False),  # agent clock
    Column("last_activity_at", UTC_TIME),
    Column("ended_at", UTC_TIME),
    Column("end_reason", String(32)),
    Column("observed_at", UTC_TIME, nullable=False),
    Column("received_at", UTC_TIME, nullable=False),
)
Index("sessions_by_started", sessions.c.started_at)
Index("sessions_by_user", sessions.c.user)

commands = Table(
    "commands", metadata,
    Column("id", ROW_ID, primary_key=True),
    Column("agent_id", String(255), nullable=False, index=True),
    Column("action", String(32), nullable=False),
    Column("args", Text, nullable=False, default="{}"),
    Column("created_by", String(128), nullable=False),
    Column("created_at", UTC_TIME, nullable=False),
    Column("expires_at", UTC_TIME, nullable=False),
    Column("state", String(16), nullable=False),  # see COMMAND_STATES
    Column("delivered_at", UTC_TIME),
    Column("acked_at", UTC_TIME),
    Column("result", Text),
)
COMMAND_STATES = ("pending", "delivered", "done", "failed", "expired")
COMMAND_ACTIONS = ("suspend", "resume", "set_bandwidth", "requeue")

audit = Table(
    "audit", metadata,
    Column("id", ROW_ID, primary_key=True),
    Column("at", UTC_TIME, nullable=False),
    Column("token_name", String(128), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", String(255)),
    Column("detail", Text),
    Column("result", Text),
)

_CACHED_TOKENS = 10_000  # more distinct valid tokens than this: the cache starts afresh

#: The agents' columns a heartbeat sets.
HEARTBEAT_COLUMNS = ("agent_time", "interval_s", "clock_offset_s", "state", "detail",
                     "version", "heartbeat")
DATASET_FIELDS = [c.name for c in datasets.columns if c.name not in ("agent_id", "received_at")]


def now() -> dt.datetime:
    """Aware UTC now (the hub's clock)."""
    return dt.datetime.now(dt.UTC)


def aware(value: dt.datetime | None) -> dt.datetime | None:
    """A stored time as aware UTC (SQLite gives it back naive)."""
    if value is None:
        return None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")  # a killed hub loses nothing committed
    cursor.close()


class HubStore:
    """Queries and updates over the hub's database.

    Parameters
    ----------
    url : str
        SQLAlchemy URL (``sqlite:////srv/hub/hub.sqlite``,
        ``postgresql+psycopg://hub@db/autotx_hub``).
    create : bool
        Create the tables, or upgrade them to this code's schema (migrations).
    token_cache_seconds : float
        How long a verified token is remembered (by its hash) before the database is asked
        again. A token revoked through this store stops working at once; one revoked from
        another process (``autotx hub token revoke``) within this many seconds. Default 0
        (no cache); the hub's app uses ``HubSettings.token_cache_seconds``
        (:data:`autotx_lib.hub.auth.TOKEN_CACHE_SECONDS`).

    Examples
    --------
    >>> store = HubStore("sqlite://")
    >>> token = store.add_token("alice", "viewer")
    >>> store.token_for(token).role
    'viewer'
    """

    def __init__(self, url: str, *, create: bool = True,
                 token_cache_seconds: float = 0.0):
        self.url = url
        self.token_cache_seconds = token_cache_seconds
        # token hash -> (its row, monotonic time to ask the database again)
        self._verified: dict[str, tuple[Row, float]] = {}
        if url.startswith("sqlite"):
            from sqlalchemy.pool import StaticPool

            memory = url in ("sqlite://", "sqlite:///:memory:")
            self.engine: Engine = create_engine(
                url, connect_args={"check_same_thread": False},
                **({"poolclass": StaticPool} if memory else {}))
            event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            self.engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
        # SQLite has one writer: writers queue on this lock instead of SQLite's busy
        # handler, whose growing sleeps turn 50 concurrent pushes into seconds of latency
        self._writing = threading.Lock() if url.startswith("sqlite") else nullcontext()
        self._statements = self._prepare()
        if create:
            from autotx_lib.hub import migrate

            memory = url in ("sqlite://", "sqlite:///:memory:")
            migrate.upgrade(url, self.engine if memory else None)

    def _write(self):
        """A transaction that writes (queued behind other writers on SQLite)."""
        return _Writing(self)

    def close(self) -> None:
        """Release the database connections."""
        self.engine.dispose()

    def _insert(self, table: Table):
        """An INSERT that knows ON CONFLICT (SQLite and PostgreSQL spell it the same way)."""
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        return dialect_insert(table)

    # --- tokens -----------------------------------------------------------------------

    def add_token(self, name: str, role: str, agent_id: str | None = None) -> str:
        """Create a token; returns it (the only time it is ever shown).

        ``agent_id`` (agent tokens only) defaults to ``name``.
        """
        auth.check_role(role)
        if not name.strip():
            raise ValueError("give the token a name (e.g. the agent id or the person)")
        if role == "agent":
            agent_id = agent_id or name
        token = auth.new_token()
        with self._write() as conn:
            if conn.execute(select(tokens.c.id).where(tokens.c.name == name)).first():
                raise ValueError(f"a token named {name!r} exists already; choose another "
                                 "name, or revoke that one first")
            conn.execute(insert(tokens).values(name=name, role=role, agent_id=agent_id,
                                               hash=auth.hash_token(token), created_at=now()))
        return token

    def tokens(self) -> list[Row]:
        """Every token (hashes included, never the tokens), oldest first."""
        with self.engine.connect() as conn:
            return list(conn.execute(select(tokens).order_by(tokens.c.id)))

    def revoke_token(self, name: str) -> bool:
        """Revoke a token by name; False when there is no such valid token."""
        with self._write() as conn:
            done = conn.execute(update(tokens).where(tokens.c.name == name)
                                .where(tokens.c.revoked_at.is_(None)).values(revoked_at=now()))
        self._verified.clear()  # revoked here: no request gets through on a cached answer
        return done.rowcount > 0

    def cached_token(self, secret: str) -> Row | None:
        """The token row for ``secret`` if it was verified less than
        ``token_cache_seconds`` ago, else None (then ask :meth:`token_for`)."""
        hit = self._verified.get(auth.hash_token(secret))  # keyed by the hash: no timing leak
        if hit is None or hit[1] < time.monotonic():
            return None
        return hit[0]

    def token_for(self, secret: str) -> Row | None:
        """The valid (not revoked) token row matching ``secret``, or None.

        A valid token is remembered for ``token_cache_seconds`` (see :meth:`cached_token`);
        unknown and revoked ones are never remembered.
        """
        cached = self.cached_token(secret)
        if cached is not None:
            return cached
        digest = auth.hash_token(secret)
        with self.engine.connect() as conn:
            row = conn.execute(select(tokens).where(tokens.c.hash == digest)).first()
        if row is None or row.revoked_at is not None or not auth.matches(secret, row.hash):
            self._verified.pop(digest, None)
            return None
        if self.token_cache_seconds > 0:
            if len(self._verified) >= _CACHED_TOKENS:
                self._verified.clear()
            self._verified[digest] = (row, time.monotonic() + self.token_cache_seconds)
        return row

    # --- agents -----------------------------------------------------------------------

    def _seen(self, conn, agent_id: str, received: dt.datetime, top_seq: int | None = None,
              **values: Any) -> None:
        """Create or update an agent's row: seen now (hub clock), with ``values`` (the
        heartbeat's columns), and its highest event sequence number raised to ``top_seq``."""
        if values:
            conn.execute(self._statements["beat"], {"id": agent_id, "first_seen": received,
                                                   "last_seen": received, "last_seq": 0,
                                                   **values})
        else:
            conn.execute(self._statements["seen"], {"id": agent_id, "first_seen": received,
                                                   "last_seen": received,
                                                   "last_seq": top_seq or 0})

    def _prepare(self) -> dict[str, Any]:
        """The statements of the frequent pushes, built once (building and caching a
        statement per request was a good part of the hub's CPU per push)."""
        seen = self._insert(agents)
        beat = self._insert(agents)
        return {
            "seen": seen.on_conflict_do_update(index_elements=["id"], set_={
                "last_seen": seen.excluded.last_seen,
                "last_seq": case((agents.c.last_seq < seen.excluded.last_seq,
                                  seen.excluded.last_seq), else_=agents.c.last_seq)}),
            "beat": beat.on_conflict_do_update(index_elements=["id"], set_={
                name: beat.excluded[name] for name in HEARTBEAT_COLUMNS + ("last_seen",)}),
            "add_events": self._insert(events).on_conflict_do_nothing(
                index_elements=["agent_id", "seq"]).returning(events.c.seq),
        }

    def heartbeat(self, agent_id: str, beat: dict[str, Any]) -> dt.datetime:
        """Record a heartbeat (``beat``: sent_at, interval_s, version, status, ...).

        Returns the hub's receive time. The agent's own ``sent_at`` is kept to show its
        clock offset, never to decide whether it is alive.
        """
        received = now()
        sent = aware(beat.get("sent_at"))
        status = beat.get("status") or {}
        values = {"agent_time": sent, "interval_s": beat.get("interval_s"),
                  "clock_offset_s": (sent - received).total_seconds() if sent else None,
                  "state": status.get("agent_state"), "detail": status.get("agent_detail"),
                  "version": beat.get("version"), "heartbeat": json.dumps(beat, default=str)}
        with self._write() as conn:
            self._seen(conn, agent_id, received, **values)
        return received

    def agents(self) -> list[Row]:
        """Every agent that ever reported, by id."""
        with self.engine.connect() as conn:
            return list(conn.execute(select(agents).order_by(agents.c.id)))

    def agent(self, agent_id: str) -> Row | None:
        """One agent's row, or None."""
        with self.engine.connect() as conn:
            return conn.execute(select(agents).where(agents.c.id == agent_id)).first()

    # --- events -----------------------------------------------------------------------

    def add_events(self, agent_id: str, batch: list[dict[str, Any]]) -> tuple[int, int]:
        """Store a batch of an agent's events once each; returns (new, already there)."""
        if not batch:
            return 0, 0
        received = now()
        seqs = [e["seq"] for e in batch]
        rows = [{"agent_id": agent_id, "received_at": received, **e, "at": aware(e["at"])}
                for e in sorted(batch, key=lambda e: e["seq"])]
        with self._write() as conn:
            # one statement: ON CONFLICT skips the events stored before (a repeated push,
            # even a concurrent one), RETURNING says which ones are new
            new = len(conn.execute(self._statements["add_events"], rows).all())
            self._seen(conn, agent_id, received, top_seq=max(seqs))
        return new, len(batch) - new

    def events(self, *, agent_id: str | None = None, kind: str | None = None,
               level: str | None = None, dataset_id: int | None = None,
               after: int | None = None, limit: int = 100) -> list[Row]:
        """Events, oldest first: in the agent's own order for one agent, else in arrival
        order; ``after`` (a hub event id) returns only newer arrivals (cheap polling)."""
        query = select(events)
        for column, value in ((events.c.agent_id, agent_id), (events.c.kind, kind),
                              (events.c.level, level), (events.c.dataset_id, dataset_id)):
            if value is not None:
                query = query.where(column == value)
        if after is not None:
            query = query.where(events.c.id > after)
        order = [events.c.seq] if agent_id is not None else [events.c.id]
        with self.engine.connect() as conn:
            return list(conn.execute(query.order_by(*order).limit(limit)))

    # --- datasets ---------------------------------------------------------------------

    def upsert_datasets(self, agent_id: str, rows: list[dict[str, Any]]) -> int:
        """Store the latest state of datasets; an older row never replaces a newer one."""
        if not rows:
            return 0
        received = now()
        values = [{**{k: (aware(v) if isinstance(v, dt.datetime) else v) for k, v in r.items()},
                   "agent_id": agent_id, "received_at": received} for r in rows]
        statement = self._insert(datasets)
        excluded = statement.excluded
        statement = statement.on_conflict_do_update(
            index_elements=["agent_id", "dataset_id"],
            set_={name: excluded[name] for name in DATASET_FIELDS + ["received_at"]
                  if name != "dataset_id"},
            where=datasets.c.updated_at <= excluded.updated_at)
        with self._write() as conn:
            conn.execute(statement, values)
            self._seen(conn, agent_id, received)
        return len(rows)

    def datasets(self, *, agent_id: str | None = None, user: str | None = None,
                 state: str | None = None, since: dt.datetime | None = None,
                 until: dt.datetime | None = None, limit: int = 100,
                 offset: int = 0) -> tuple[list[Row], int]:
        """Datasets matching the filters, newest first, and how many match in all.

        ``since``/``until`` bound the time the agent created (claimed) the dataset.
        """
        query = select(datasets)
        for column, value in ((datasets.c.agent_id, agent_id), (datasets.c.user, user),
                              (datasets.c.state, state)):
            if value is not None:
                query = query.where(column == value)
        if since is not None:
            query = query.where(datasets.c.created_at >= since)
        if until is not None:
            query = query.where(datasets.c.created_at < until)
        count = select(func.count()).select_from(query.subquery())
        page = query.order_by(datasets.c.created_at.desc(), datasets.c.agent_id,
                              datasets.c.dataset_id.desc()).limit(limit).offset(offset)
        with self.engine.connect() as conn:
            return list(conn.execute(page)), conn.execute(count).scalar_one()

    def dataset(self, agent_id: str, dataset_id: int) -> Row | None:
        """One dataset's latest state, or None."""
        with self.engine.connect() as conn:
            return conn.execute(select(datasets).where(datasets.c.agent_id == agent_id)
                                .where(datasets.c.dataset_id == dataset_id)).first()

    def dataset_rows(self, since: dt.datetime | None = None) -> list[Row]:
        """Every dataset created since ``since`` (for statistics)."""
        query = select(datasets)
        if since is not None:
            query = query.where(datasets.c.created_at >= since)
        with self.engine.connect() as conn:
            return list(conn.execute(query))

    def run_rows(self, since: dt.datetime | None = None) -> list[Row]:
        """(agent_id, workflow, status, created_at, duration_s) of every pipeline run
        created since ``since`` (for statistics)."""
        query = select(runs.c.agent_id, runs.c.workflow, runs.c.status, runs.c.created_at,
                       runs.c.duration_s)
        if since is not None:
            query = query.where(runs.c.created_at >= since)
        with self.engine.connect() as conn:
            return list(conn.execute(query))

    def error_counts(self, since: dt.datetime | None = None) -> list[Row]:
        """(kind, count, agents, last) of error and warning events since ``since``."""
        query = (select(events.c.kind, events.c.level, func.count().label("count"),
                        func.count(events.c.agent_id.distinct()).label("agents"),
                        func.max(events.c.received_at).label("last"))
                 .where(events.c.level.in_(["error", "warning"]))
                 .group_by(events.c.kind, events.c.level).order_by(func.count().desc()))
        if since is not None:
            query = query.where(events.c.received_at >= since)
        with self.engine.connect() as conn:
            return list(conn.execute(query))

    # --- pipeline runs and instrument sessions ---------------------------------------------

    def _upsert_latest(self, table: Table, key: str, agent_id: str,
                       rows: list[dict[str, Any]]) -> int:
        """Store rows keyed by (agent, ``key``); a row observed earlier never replaces one
        observed later, so a delayed resend cannot roll a record back."""
        if not rows:
            return 0
        received = now()
        values = [{**{k: (aware(v) if isinstance(v, dt.datetime) else v) for k, v in r.items()},
                   "agent_id": agent_id, "received_at": received} for r in rows]
        statement = self._insert(table)
        statement = statement.on_conflict_do_update(
            index_elements=["agent_id", key],
            set_={c.name: statement.excluded[c.name] for c in table.columns
                  if c.name not in ("agent_id", key)},
            where=table.c.observed_at <= statement.excluded.observed_at)
        with self._write() as conn:
            conn.execute(statement, values)
            self._seen(conn, agent_id, received)
        return len(rows)

    def upsert_runs(self, agent_id: str, rows: list[dict[str, Any]]) -> int:
        """Store the latest state of an agent's pipeline runs; returns how many."""
        return self._upsert_latest(runs, "run_id", agent_id, rows)

    def upsert_sessions(self, agent_id: str, rows: list[dict[str, Any]]) -> int:
        """Store the latest state of an agent's instrument sessions; returns how many."""
        return self._upsert_latest(sessions, "session_id", agent_id, rows)

    def _page(self, table: Table, key: str, time_column: str, filters: dict[str, Any],
              since: dt.datetime | None, until: dt.datetime | None, limit: int,
              offset: int, *conditions: Any) -> tuple[list[Row], int]:
        """One page of ``table`` (newest ``time_column`` first) and the number matching."""
        query = select(table).where(*conditions)
        for name, value in filters.items():
            if value is not None:
                query = query.where(table.c[name] == value)
        when = table.c[time_column]
        if since is not None:
            query = query.where(when >= since)
        if until is not None:
            query = query.where(when < until)
        count = select(func.count()).select_from(query.subquery())
        page = query.order_by(when.desc(), table.c.agent_id, table.c[key].desc())
        with self.engine.connect() as conn:
            return (list(conn.execute(page.limit(limit).offset(offset))),
                    conn.execute(count).scalar_one())

    def runs(self, *, agent_id: str | None = None, status: str | None = None,
             workflow: str | None = None, user: str | None = None,
             dataset_id: int | None = None, since: dt.datetime | None = None,
             until: dt.datetime | None = None, limit: int = 100,
             offset: int = 0) -> tuple[list[Row], int]:
        """Pipeline runs matching the filters, newest first, and how many match in all.

        ``since``/``until`` bound the time the run was created (agent clock).
        """
        return self._page(runs, "run_id", "created_at", {
            "agent_id": agent_id, "status": status, "workflow": workflow, "user": user,
            "dataset_id": dataset_id}, since, until, limit, offset)

    def run(self, agent_id: str, run_id: int) -> Row | None:
        """One pipeline run's latest state, or None."""
        with self.engine.connect() as conn:
            return conn.execute(select(runs).where(runs.c.agent_id == agent_id)
                                .where(runs.c.run_id == run_id)).first()

    def sessions(self, *, agent_id: str | None = None, user: str | None = None,
                 open_only: bool = False, since: dt.datetime | None = None,
                 until: dt.datetime | None = None, limit: int = 100,
                 offset: int = 0) -> tuple[list[Row], int]:
        """Instrument sessions matching the filters, newest first, and how many match.

        ``since``/``until`` bound the start of the session (agent clock); ``open_only``:
        sessions not ended.
        """
        return self._page(sessions, "session_id", "started_at",
                          {"agent_id": agent_id, "user": user}, since, until, limit, offset,
                          *([sessions.c.ended_at.is_(None)] if open_only else []))

    def session(self, agent_id: str, session_id: int) -> Row | None:
        """One instrument session's latest state, or None."""
        with self.engine.connect() as conn:
            return conn.execute(select(sessions).where(sessions.c.agent_id == agent_id)
                                .where(sessions.c.session_id == session_id)).first()

    # --- commands ---------------------------------------------------------------------

    def add_command(self, agent_id: str, action: str, args: dict[str, Any], by: str,
                    ttl_seconds: float) -> Row:
        """Queue a command for an agent (it picks it up at its next poll)."""
        if action not in COMMAND_ACTIONS:
            raise ValueError(f"unknown action {action!r}; choose one of "
                             f"{', '.join(COMMAND_ACTIONS)}")
        created = now()
        with self._write() as conn:
            command_id = conn.execute(insert(commands).values(
                agent_id=agent_id, action=action, args=json.dumps(args), created_by=by,
                created_at=created, expires_at=created + dt.timedelta(seconds=ttl_seconds),
                state="pending")).inserted_primary_key[0]
            return conn.execute(select(commands).where(commands.c.id == command_id)).one()

    def _expire(self, conn) -> None:
        conn.execute(update(commands).where(commands.c.state == "pending")
                     .where(commands.c.expires_at < now())
                     .values(state="expired", result="expired: the agent did not ask for it "
                             "before its expiry time"))

    def take_commands(self, agent_id: str) -> list[Row]:
        """Commands an agent has not acknowledged yet (pending ones become delivered),
        oldest first; expired ones are marked so and never handed out."""
        with self._write() as conn:
            self._expire(conn)
            open_ = (commands.c.agent_id == agent_id) & \
                commands.c.state.in_(["pending", "delivered"])
            rows = list(conn.execute(select(commands).where(open_).order_by(commands.c.id)))
            conn.execute(update(commands).where(open_).where(commands.c.state == "pending")
                         .values(state="delivered", delivered_at=now()))
            self._seen(conn, agent_id, now())
        return rows

    def ack_command(self, agent_id: str, command_id: int, ok: bool, result: str) -> Row | None:
        """Record an agent's result; None when the command is not its own or already
        acknowledged (a replay changes nothing)."""
        with self._write() as conn:
            done = conn.execute(update(commands).where(commands.c.id == command_id)
                                .where(commands.c.agent_id == agent_id)
                                .where(commands.c.state.in_(["pending", "delivered"]))
                                .values(state="done" if ok else "failed", acked_at=now(),
                                        result=result))
            if done.rowcount == 0:
                return None
            return conn.execute(select(commands).where(commands.c.id == command_id)).one()

    def command(self, command_id: int) -> Row | None:
        """One command, or None."""
        with self._write() as conn:
            self._expire(conn)
            return conn.execute(select(commands).where(commands.c.id == command_id)).first()

    def commands(self, *, agent_id: str | None = None, state: str | None = None,
                 limit: int = 100) -> list[Row]:
        """Commands, newest first."""
        query = select(commands)
        if agent_id is not None:
            query = query.where(commands.c.agent_id == agent_id)
        if state is not None:
            query = query.where(commands.c.state == state)
        with self._write() as conn:
            self._expire(conn)
            return list(conn.execute(query.order_by(commands.c.id.desc()).limit(limit)))

    # --- audit ------------------------------------------------------------------------

    def add_audit(self, token_name: str, action: str, target: str | None = None,
                  detail: str | None = None, result: str | None = None) -> None:
        """Record who did what to what, and what came of it."""
        with self._write() as conn:
            conn.execute(insert(audit).values(at=now(), token_name=token_name, action=action,
                                              target=target, detail=detail, result=result))

    def audit(self, limit: int = 100) -> list[Row]:
        """The audit trail, newest first."""
        with self.engine.connect() as conn:
            return list(conn.execute(select(audit).order_by(audit.c.id.desc()).limit(limit)))


class _Writing:
    """``with store._write() as conn``: the write lock, then ``engine.begin()``."""

    def __init__(self, store: HubStore):
        self.store = store

    def __enter__(self):
        self.store._writing.__enter__()
        try:
            self.transaction = self.store.engine.begin()
            return self.transaction.__enter__()
        except BaseException:
            self.store._writing.__exit__(None, None, None)
            raise

    def __exit__(self, *exc: object) -> None:
        try:
            self.transaction.__exit__(*exc)
        finally:
            self.store._writing.__exit__(None, None, None)


def as_dict(row: Row, drop: Iterable[str] = ()) -> dict[str, Any]:
    """A row as a plain dict, times as aware UTC."""
    return {k: (aware(v) if isinstance(v, dt.datetime) else v)
            for k, v in row._mapping.items() if k not in drop}


__all__ = ["HubStore", "metadata", "tokens", "agents", "events", "datasets", "runs",
           "sessions", "commands",
           "audit", "COMMAND_ACTIONS", "COMMAND_STATES", "now", "aware", "as_dict"]
