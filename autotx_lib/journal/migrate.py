"""Schema migrations of the journal (Alembic, scripts in ``migrations/versions``).

The journal upgrades itself when an agent opens it (:class:`~autotx_lib.journal.Journal`),
and ``autotx journal upgrade`` does the same by hand (``--dry-run`` shows the plan).
A journal written before migrations existed (no ``alembic_version`` table) is checked
against the baseline revision's tables, stamped with it, then upgraded. A journal of a
newer schema than this code knows is refused, never touched.

The whole upgrade is one transaction under a lock (``BEGIN IMMEDIATE`` on SQLite, an
advisory lock on PostgreSQL), so two processes starting at once upgrade it once, and a
failure half-way leaves the journal as it was.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Connection, Engine

from autotx_lib.errors import JournalError

BASELINE = "0001"
_PG_LOCK_KEY = 0x6A6F75726E616C  # "journal": one advisory lock id for every autotx process


@dataclass(frozen=True)
class Step:
    """One thing an upgrade does: stamp the baseline, or apply a revision."""

    revision: str
    description: str


@dataclass
class Plan:
    """What :func:`upgrade` would do to a journal."""

    current: str | None  # None: no alembic_version (an empty or a pre-migration journal)
    head: str
    legacy: bool = False  # tables of the release before migrations, to be stamped
    steps: list[Step] = field(default_factory=list)
    sql: str = ""  # the SQL of the steps (offline rendering), for --dry-run

    @property
    def needed(self) -> bool:
        return bool(self.steps)


@functools.cache
def _script():
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(Path(__file__).with_name("migrations")))


def head() -> str:
    """The newest revision this code knows."""
    return _script().get_current_head()


def known(revision: str) -> bool:
    """Whether ``revision`` is one of this code's migrations."""
    from alembic.util import CommandError

    try:
        return _script().get_revision(revision) is not None
    except CommandError:
        return False


def current_revision(conn: Connection) -> str | None:
    """The journal's revision (None when it has no ``alembic_version`` table)."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def check_known(revision: str | None, where: str) -> None:
    """Refuse a journal written by a newer autotx (its schema is unknown here)."""
    if revision is not None and not known(revision):
        raise JournalError(
            f"the journal {where} has schema revision {revision}, newer than this autotx "
            f"knows (up to {head()}); it was written by a newer autotx_lib. Install that "
            "version (or newer) here, or point `journal` at another journal. Nothing was "
            "changed")


def _legacy_tables(conn: Connection, where: str) -> bool:
    """True for a pre-migration journal (its tables checked), False for an empty database."""
    tables = _script().get_revision(BASELINE).module.TABLES  # frozen in the baseline script
    present = set(inspect(conn).get_table_names())
    if not present & set(tables):
        return False
    for table, columns in tables.items():
        have = {c["name"] for c in inspect(conn).get_columns(table)} if table in present \
            else set()
        missing = [c for c in columns if c not in have]
        if missing:
            raise JournalError(
                f"the journal {where} has autotx tables but not the ones this autotx can "
                f"upgrade ({table}: missing {', '.join(missing)}). It is not an autotx "
                "journal of a known release; point `journal` at the agent's own journal")
    return True


def plan(conn: Connection, where: str, *, with_sql: bool = False) -> Plan:
    """What an upgrade would do, read without changing anything."""
    current = current_revision(conn)
    check_known(current, where)
    result = Plan(current=current, head=head())
    start = current
    if current is None:
        result.legacy = _legacy_tables(conn, where)
        if result.legacy:
            result.steps.append(Step(BASELINE, "stamp as the baseline (its tables match the "
                                     "release before migrations)"))
            start = BASELINE
    revisions = list(_script().iterate_revisions(result.head, start))
    for revision in reversed(revisions):
        doc = (revision.doc or "").strip().splitlines()[0]
        result.steps.append(Step(revision.revision, doc))
    if with_sql and result.steps:
        result.sql = _offline_sql(conn.dialect.name, start, result.head)
    return result


def _alembic_config(**attributes):
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig()
    config.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    config.attributes.update(attributes)
    return config


def _offline_sql(dialect: str, start: str | None, target: str) -> str:
    from alembic import command

    buffer = io.StringIO()
    config = _alembic_config(dialect=dialect, output=buffer)
    command.upgrade(config, f"{start}:{target}" if start else target, sql=True)
    return buffer.getvalue()


def upgrade_connection(conn: Connection, where: str) -> Plan:
    """Upgrade the journal on ``conn`` (inside the caller's locked transaction)."""
    from alembic import command

    steps = plan(conn, where)
    if not steps.needed:
        return steps
    config = _alembic_config(connection=conn)
    if steps.legacy:
        command.stamp(config, BASELINE)
    command.upgrade(config, "head")
    return steps


def _locked_engine(url: str, busy_timeout_s: float) -> Engine:
    """An engine whose transactions take the journal's write lock at once (SQLite)."""
    if not url.startswith("sqlite"):
        return create_engine(url)
    engine = create_engine(url, connect_args={"timeout": busy_timeout_s,
                                              "isolation_level": None})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record) -> None:  # noqa: ANN001
        dbapi_connection.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")

    @event.listens_for(engine, "begin")
    def _begin(conn) -> None:  # noqa: ANN001
        conn.exec_driver_sql("BEGIN IMMEDIATE")  # DDL included: SQLite's DDL is transactional

    return engine


def upgrade(url: str, where: str, *, busy_timeout_s: float = 30.0) -> Plan:
    """Upgrade the journal at ``url`` to the newest revision; returns what was done."""
    engine = _locked_engine(url, busy_timeout_s)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
            return upgrade_connection(conn, where)
    finally:
        engine.dispose()


__all__ = ["Plan", "Step", "BASELINE", "head", "known", "current_revision", "plan", "upgrade",
           "check_known"]
