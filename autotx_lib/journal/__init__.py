"""The journal: the single source of truth for datasets, files, events and agent sessions.

SQLAlchemy 2 Core over SQLite (WAL) by default, PostgreSQL for a facility-wide journal;
one schema for both, changed only through migrations (:mod:`.migrate`, Alembic). Every
state change of a dataset is written here before and after the filesystem step it
describes, so an agent killed at any instant resumes correctly. Status is read from here,
never from the agent's memory. Times are timezone-aware UTC.

Layout: :mod:`.schema` (tables, states), :mod:`.engine` (opening the database),
:mod:`.migrate` and ``migrations/`` (schema changes), one module per kind of record
(:mod:`.datasets`, :mod:`.deliveries`, :mod:`.files`, :mod:`.events`, :mod:`.sessions`, :mod:`.settings`,
:mod:`.outbox`, :mod:`.jobs`, :mod:`.instrument_sessions`, :mod:`.pipeline_runs` (its tables in
:mod:`.schema`)) and :mod:`.core` (the :class:`Journal` made of them).
SQL lives in this package and nowhere else.
"""

from __future__ import annotations

from autotx_lib.journal.core import Journal
from autotx_lib.journal.schema import (
    ACTIVE_STATES,
    CLAIMING,
    COPYING,
    DELIVERED,
    DELIVERING,
    DONE,
    ERROR,
    FINAL_STATES,
    JOB_STATES,
    QUARANTINING,
    QUEUED,
    UNMATCHED,
    UNMATCHING,
    VANISHED,
    as_utc,
    datasets,
    deliveries,
    events,
    files,
    instrument_sessions,
    jobs,
    live_files,
    metadata,
    outbox,
    sessions,
    settings,
    utcnow,
)

__all__ = [
    "Journal", "datasets", "deliveries", "files", "events", "sessions", "settings", "outbox", "jobs", "JOB_STATES",
    "instrument_sessions", "live_files", "metadata", "utcnow", "as_utc",
    "ACTIVE_STATES", "FINAL_STATES", "CLAIMING", "QUEUED", "COPYING", "DELIVERING", "DELIVERED",
    "DONE", "UNMATCHING", "UNMATCHED", "QUARANTINING", "ERROR", "VANISHED",
]
