"""Schema migrations of the hub's database (Alembic, scripts in ``migrations/versions``).

:class:`~autotx_lib.hub.store.HubStore` upgrades the database when the hub opens it
(``autotx hub init`` and ``autotx hub serve`` included). A hub database created before
migrations existed (hub tables, no ``hub_alembic_version``) is checked against the
baseline revision's tables, stamped with it, then upgraded. A database of a newer schema
than this code knows is refused, never touched.

The upgrade is one transaction under a lock (``BEGIN IMMEDIATE`` on SQLite, an advisory
lock on PostgreSQL): two hubs starting at once upgrade it once, and a failure half-way
leaves the database as it was.
"""

from __future__ import annotations

import functools
from pathlib import Path

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Connection, Engine

from autotx_lib.errors import HubError

BASELINE = "0001"
VERSION_TABLE = "hub_alembic_version"
_PG_LOCK_KEY = 0x6875622D6462  # "hub-db": one advisory lock id for every hub process


@functools.cache
def _script():
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(Path(__file__).with_name("migrations")))


def head() -> str:
    """The newest revision this code knows."""
    return _script().get_current_head()


def current_revision(conn: Connection) -> str | None:
    """The database's revision (None when it has no ``hub_alembic_version`` table)."""
    if not inspect(conn).has_table(VERSION_TABLE):
        return None
    return conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def _known(revision: str) -> bool:
    from alembic.util import CommandError

    try:
        return _script().get_revision(revision) is not None
    except CommandError:
        return False


def _legacy(conn: Connection, where: str) -> bool:
    """True for a hub database of the release before migrations (its tables checked),
    False for an empty one."""
    tables = _script().get_revision(BASELINE).module.TABLES  # frozen in the baseline script
    present = set(inspect(conn).get_table_names())
    if not present & set(tables):
        return False
    for table, columns in tables.items():
        have = {c["name"] for c in inspect(conn).get_columns(table)} if table in present \
            else set()
        missing = [c for c in columns if c not in have]
        if missing:
            raise HubError(f"the database {where} has some of the hub's tables but not as a "
                           f"known release made them ({table}: missing {', '.join(missing)}); "
                           "point `database` in hub.toml at the hub's own database. Nothing "
                           "was changed")
    return True


def upgrade_connection(conn: Connection, where: str) -> list[str]:
    """Upgrade the hub's database on ``conn`` (in the caller's locked transaction);
    returns the revisions applied (a stamped baseline included)."""
    from alembic import command
    from alembic.config import Config as AlembicConfig

    current = current_revision(conn)
    if current is not None and not _known(current):
        raise HubError(f"the hub database {where} has schema revision {current}, newer than "
                       f"this autotx knows (up to {head()}): a newer autotx_lib wrote it. "
                       "Install that version here. Nothing was changed")
    config = AlembicConfig()
    config.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    config.attributes["connection"] = conn
    start, done = current, []
    if current is None and _legacy(conn, where):
        command.stamp(config, BASELINE)
        start, done = BASELINE, [BASELINE]
    pending = [r.revision for r in reversed(list(_script().iterate_revisions(head(), start)))]
    if pending:
        command.upgrade(config, "head")
    return done + pending


def _locked_engine(url: str) -> Engine:
    """An engine whose transactions take SQLite's write lock at once (DDL included)."""
    if not url.startswith("sqlite"):
        return create_engine(url)
    engine = create_engine(url, connect_args={"timeout": 30.0, "isolation_level": None})

    @event.listens_for(engine, "begin")
    def _begin(conn) -> None:  # noqa: ANN001
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def upgrade(url: str, engine: Engine | None = None) -> list[str]:
    """Bring the hub's database at ``url`` to the newest revision; returns the revisions
    applied. ``engine``: use this one (an in-memory SQLite database has no other)."""
    own = engine is None
    engine = engine or _locked_engine(url)
    where = engine.url.render_as_string(hide_password=True)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
            return upgrade_connection(conn, where)
    finally:
        if own:
            engine.dispose()


__all__ = ["BASELINE", "VERSION_TABLE", "head", "current_revision", "upgrade",
           "upgrade_connection"]
