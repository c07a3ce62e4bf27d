"""The :class:`Journal`: one object over the journal's database, made of one mixin per
kind of record (datasets, files, events, sessions, settings, outbox, jobs)."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from autotx_lib.errors import JournalError
from autotx_lib.journal import migrate
from autotx_lib.journal.datasets import DatasetRecords
from autotx_lib.journal.deliveries import DeliveryRecords
from autotx_lib.journal.engine import create_private, explain_sqlite_error, make_engine
from autotx_lib.journal.events import EventRecords
from autotx_lib.journal.files import FileRecords
from autotx_lib.journal.jobs import JobRecords
from autotx_lib.journal.outbox import OutboxRecords
from autotx_lib.journal.sessions import SessionRecords
from autotx_lib.journal.settings import SettingRecords


class Journal(DatasetRecords, FileRecords, EventRecords, SessionRecords, SettingRecords,
              OutboxRecords, JobRecords, DeliveryRecords):
    """Queries and updates over the journal database.

    Opening a journal read-write upgrades its schema first (see
    :mod:`autotx_lib.journal.migrate`); opening it ``readonly`` changes nothing and
    refuses a journal that does not exist yet or needs an upgrade.

    Parameters
    ----------
    url : str
        A SQLAlchemy URL, e.g. ``sqlite:////data/managed/autotx.sqlite`` or
        ``postgresql+psycopg://user@host/autotx``.
    busy_timeout_s : float
        How long a SQLite journal locked by another process is waited for before
        :class:`~autotx_lib.errors.JournalBusyError` is raised.
    readonly : bool
        Read only: no file is created, no schema changed, no row written (for
        ``autotx status`` and other readers).
    agent_id : str, optional
        The agent opening the journal: a journal nobody claimed yet becomes this agent's,
        one that belongs to another agent is refused (:class:`JournalError`).

    Examples
    --------
    >>> j = Journal("sqlite://")          # in memory
    >>> j.log("info", "note", "hello")
    >>> j.recent_events(1)[0].message
    'hello'
    """

    def __init__(self, url: str, *, busy_timeout_s: float = 30.0, readonly: bool = False,
                 agent_id: str | None = None):
        self.url = url
        self.readonly = readonly
        self.path: Path | None = None  # the SQLite file, if the journal is one
        self._identity: tuple[int, int] | None = None
        try:
            if url.startswith("sqlite"):
                database = make_url(url).database
                if database and database != ":memory:":
                    self.path = Path(database)
                    self._prepare_file(readonly)
            self.engine = make_engine(url, busy_timeout_s, readonly)
            event.listen(self.engine, "handle_error",
                         lambda context: explain_sqlite_error(context, self.path or self._safe_url()))
            self._check_schema(busy_timeout_s)
            if agent_id is not None:
                self.claim(agent_id, readonly=readonly)
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

    def _prepare_file(self, readonly: bool) -> None:
        assert self.path is not None
        if readonly:
            if not self.path.is_file():
                raise JournalError(
                    f"there is no journal at {self.path} yet: the agent creates it when it "
                    "first starts (`autotx run -c CONFIG`); check `managed` or `journal` in "
                    "the config if it has run before")
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        create_private(self.path)

    def _check_schema(self, busy_timeout_s: float) -> None:
        """Upgrade the schema (read-write), or check it needs none (read only)."""
        where = self.path or self._safe_url()
        with self.engine.connect() as conn:
            current = migrate.current_revision(conn)
            if current == migrate.head():
                return
            migrate.check_known(current, str(where))
            if self.readonly:
                empty = not inspect(conn).get_table_names()
        if not self.readonly:
            if self.path is None and self.url.startswith("sqlite"):  # in memory: no one else
                with self.engine.begin() as conn:
                    done = migrate.upgrade_connection(conn, str(where))
            else:
                done = migrate.upgrade(self.url, str(where), busy_timeout_s=busy_timeout_s)
            if done.needed and (done.current is not None or done.legacy):  # not a new one
                self.log("info", "journal", f"journal upgraded from schema "
                         f"{done.current or 'of the release before migrations'} to {done.head}, "
                         "every row kept")
            return
        if empty:
            raise JournalError(f"the journal {where} is empty: the agent creates its tables "
                               "when it first starts (`autotx run -c CONFIG`)")
        schema = current or "of the release before migrations"
        raise JournalError(
            f"the journal {where} needs an upgrade (schema {schema}, this autotx uses "
            f"{migrate.head()}): run `autotx journal upgrade -c CONFIG` (or start the agent, "
            "which upgrades it), then try again")

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

    def _safe_url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True) if hasattr(self, "engine") \
            else self.url.split("@")[-1]

    def close(self) -> None:
        """Release the database connections."""
        self.engine.dispose()

    def _set_default(self, key: str, value: Any) -> None:
        if self.get_setting(key) is None:
            self.set_setting(key, value)


def upgrade_journal(url: str, *, dry_run: bool = False, busy_timeout_s: float = 30.0
                    ) -> migrate.Plan:
    """Upgrade the journal at ``url`` to this autotx's schema (``autotx journal upgrade``).

    Parameters
    ----------
    url : str
        The journal's SQLAlchemy URL.
    dry_run : bool
        Only say what would be done (the steps and their SQL); change nothing.

    Returns
    -------
    plan : Plan
        The steps done (or to do); ``plan.needed`` is False for an up-to-date journal.
    """
    where = url
    if url.startswith("sqlite"):
        database = make_url(url).database
        if not database or database == ":memory:":
            raise JournalError("an in-memory journal has nothing to upgrade")
        where = database
        if not Path(database).is_file():
            raise JournalError(f"there is no journal at {database}: nothing to upgrade (the "
                               "agent creates a new one, already up to date, when it starts)")
    engine = make_engine(url, busy_timeout_s, readonly=True)
    where = where if url.startswith("sqlite") else \
        engine.url.render_as_string(hide_password=True)
    try:
        with engine.connect() as conn:
            steps = migrate.plan(conn, where, with_sql=dry_run)
    except SQLAlchemyError as error:
        raise JournalError(f"cannot read the journal at {where}: {error.__class__.__name__}: "
                           f"{error}") from None
    finally:
        engine.dispose()
    if dry_run or not steps.needed:
        return steps
    return migrate.upgrade(url, where, busy_timeout_s=busy_timeout_s)
