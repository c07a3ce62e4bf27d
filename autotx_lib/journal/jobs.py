"""Post-delivery jobs of older releases (the ``jobs`` table; kept for their rows).

New post-delivery work runs on the pipelines engine (:mod:`autotx_lib.pipelines.engine`);
:func:`autotx_lib.pipelines.omero_import.adopt_legacy_jobs` moves unfinished import jobs onto it.

A job goes ``created`` -> ``started`` -> ``finished``, or ``error`` (retried when
``next_attempt_at`` is set), or ``cancelled``. Claiming and closing are compare-and-set
updates, so two runners never run one attempt twice and a cancelled job stays cancelled.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.engine import Row

from autotx_lib.journal._base import Records
from autotx_lib.journal.schema import jobs, utcnow

CREATED, STARTED, FINISHED, ERROR, CANCELLED = "created", "started", "finished", "error", "cancelled"


class JobRecords(Records):
    """Queries and updates of ``jobs``."""

    def add_job(self, kind: str, dataset_id: int | None, payload: dict[str, Any]) -> int:
        """Queue a job in state "created"; returns its id."""
        with self.engine.begin() as conn:
            return conn.execute(insert(jobs).values(
                kind=kind, dataset_id=dataset_id, state=CREATED, payload=json.dumps(payload),
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

    def due_jobs(self, kinds: Iterable[str], now: dt.datetime, stale_before: dt.datetime
                 ) -> list[Row]:
        """Jobs of ``kinds`` to run now, oldest first: created, failed with a retry due,
        or started before ``stale_before`` (their runner died)."""
        query = select(jobs).where(jobs.c.kind.in_(list(kinds)), or_(
            jobs.c.state == CREATED,
            and_(jobs.c.state == ERROR, jobs.c.next_attempt_at.is_not(None),
                 jobs.c.next_attempt_at <= now),
            and_(jobs.c.state == STARTED, jobs.c.started_at < stale_before),
        )).order_by(jobs.c.id)
        with self.engine.connect() as conn:
            return list(conn.execute(query))

    def claim_job(self, row: Row, now: dt.datetime) -> bool:
        """Mark the job started, unless another runner got there first (True: ours)."""
        with self.engine.begin() as conn:
            result = conn.execute(
                update(jobs).where(jobs.c.id == row.id, jobs.c.state == row.state,
                                   jobs.c.attempts == row.attempts)
                .values(state=STARTED, attempts=row.attempts + 1, started_at=now,
                        finished_at=None, duration_s=None, next_attempt_at=None))
            return result.rowcount == 1

    def close_job(self, job_id: int, **values: Any) -> bool:
        """Record a started job's end, unless it was cancelled meanwhile (True: recorded)."""
        with self.engine.begin() as conn:
            result = conn.execute(update(jobs).where(jobs.c.id == job_id,
                                                     jobs.c.state == STARTED).values(**values))
            return result.rowcount == 1

    def cancel_job(self, job_id: int) -> bool:
        """Cancel a job that has not finished (a started one too); True when cancelled."""
        with self.engine.begin() as conn:
            result = conn.execute(update(jobs).where(jobs.c.id == job_id,
                                                     jobs.c.state.in_([CREATED, ERROR, STARTED]))
                                  .values(state=CANCELLED, next_attempt_at=None,
                                          finished_at=utcnow()))
            return result.rowcount == 1

    def retry_job(self, job_id: int) -> bool:
        """Make a failed or cancelled job due now; True when done."""
        with self.engine.begin() as conn:
            result = conn.execute(update(jobs).where(jobs.c.id == job_id,
                                                     jobs.c.state.in_([ERROR, CANCELLED]))
                                  .values(state=ERROR, next_attempt_at=utcnow()))
            return result.rowcount == 1
