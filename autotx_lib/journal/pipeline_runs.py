"""Pipeline runs: the execution log (runs, their steps, their results, the engines running them).

A run goes ``created`` -> ``started`` -> ``finished`` | ``error`` | ``timeout``;
``cancelled`` at any point before it ends. A failed attempt that will be retried is
``error`` with ``next_attempt_at`` set. Times are timezone-aware UTC.

Two agents whose rules produce the same run (same workflow, same delivered folder) share
one row: ``dedup_key`` is unique, and the second :meth:`PipelineStore.add_run` returns the
first one's id.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import String, and_, bindparam, func, insert, or_, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError

from autotx_lib.journal.schema import (
    RUN_STATES,
    as_utc,
    events,
    pipeline_engines,
    pipeline_results,
    pipeline_runs,
    pipeline_steps,
    utcnow,
)

if TYPE_CHECKING:
    from autotx_lib.journal.core import Journal

CREATED, STARTED, FINISHED, ERROR, CANCELLED, TIMEOUT = RUN_STATES
OPEN_STATES = (CREATED, STARTED)


def aware(value: dt.datetime | None) -> dt.datetime | None:
    """A time as aware UTC (a naive one is taken as UTC)."""
    return as_utc(value)


class PipelineStore:
    """Queries and updates over the pipeline tables of one journal (its migrations create them)."""

    def __init__(self, journal: Journal):
        self.journal = journal
        self.engine = journal.engine

    # --- runs -----------------------------------------------------------------------------

    def add_run(self, *, workflow: str, version: str, dataset_path: str, initiator: str,
                dataset_id: int | None = None, user: str | None = None,
                params: dict[str, Any] | None = None, dedup_key: str | None = None,
                max_attempts: int = 1, timeout_s: float | None = None,
                rerun_of: int | None = None) -> tuple[int, bool]:
        """Record a due run; returns ``(id, created)`` (False: the same run existed)."""
        values = dict(workflow=workflow, version=version, dataset_path=dataset_path,
                      initiator=initiator, dataset_id=dataset_id, user=user, status=CREATED,
                      params=json.dumps(params or {}), dedup_key=dedup_key, attempts=0,
                      max_attempts=max_attempts, timeout_s=timeout_s, created_at=utcnow(),
                      rerun_of=rerun_of)
        try:
            with self.engine.begin() as conn:
                return conn.execute(insert(pipeline_runs).values(**values)
                                    ).inserted_primary_key[0], True
        except IntegrityError:
            if dedup_key is None:
                raise
            with self.engine.connect() as conn:
                found = conn.execute(select(pipeline_runs.c.id).where(
                    pipeline_runs.c.dedup_key == dedup_key)).scalar_one()
            return found, False

    def add_runs(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert many finished or open runs at once (imports, benchmarks)."""
        with self.engine.begin() as conn:
            for start in range(0, len(rows), 5000):
                conn.execute(insert(pipeline_runs), list(rows[start:start + 5000]))

    def run(self, run_id: int) -> Row | None:
        """One run by id."""
        with self.engine.connect() as conn:
            return conn.execute(select(pipeline_runs).where(pipeline_runs.c.id == run_id)).first()

    def due(self, now: dt.datetime, limit: int = 100) -> list[Row]:
        """Runs to start now: created, or failed with a retry due; oldest first."""
        query = (select(pipeline_runs).where(or_(
            pipeline_runs.c.status == CREATED,
            and_(pipeline_runs.c.status == ERROR, pipeline_runs.c.next_attempt_at.is_not(None),
                 pipeline_runs.c.next_attempt_at <= now)))
            .order_by(pipeline_runs.c.id).limit(limit))
        with self.engine.connect() as conn:
            return list(conn.execute(query))

    def claim(self, row: Row, engine_id: str) -> bool:
        """Mark a due run started by ``engine_id``, unless another engine got it first."""
        return bool(self.claim_many([row], engine_id))

    def claim_many(self, rows: Sequence[Row], engine_id: str) -> list[Row]:
        """Claim due runs in one transaction; returns those this engine got.

        A row changed by another engine since it was read (status or attempts) is not
        claimed: the update matches on both.
        """
        if not rows:
            return []
        now = utcnow()
        c = pipeline_runs.c
        statement = (update(pipeline_runs)
                     .where(c.id == bindparam("b_id"), c.status == bindparam("b_status"),
                            c.attempts == bindparam("b_attempts"))
                     .values(status=STARTED, attempts=bindparam("b_next"), started_at=now,
                             finished_at=None, duration_s=None, next_attempt_at=None,
                             engine=engine_id, error=None))
        with self.engine.begin() as conn:
            conn.execute(statement, [{"b_id": r.id, "b_status": r.status,
                                      "b_attempts": r.attempts, "b_next": r.attempts + 1}
                                     for r in rows])
            got = {r.id for r in conn.execute(select(c.id).where(
                c.id.in_([r.id for r in rows]), c.engine == engine_id, c.status == STARTED,
                c.started_at == now))}
        return [r for r in rows if r.id in got]

    def record_outcomes(self, outcomes: Sequence[dict[str, Any]]) -> list[bool]:
        """Record ended attempts in one transaction: step log, results, status, an event.

        Each outcome has ``run_id, attempt, status, duration_s, error, next_attempt_at,
        version, steps, results`` (typed items, or None to keep) and ``event`` (``(level,
        message, dataset_id)`` or None). A run no longer ``started`` (cancelled meanwhile)
        keeps its status and results; its steps are still recorded. Returns, per outcome,
        whether its status was written.
        """

        if not outcomes:
            return []
        now = utcnow()
        c = pipeline_runs.c
        with self.engine.begin() as conn:
            # take the write lock first, so no cancel slips in between the look and the write
            conn.execute(update(pipeline_runs).where(c.id == -1).values(status=STARTED))
            open_ids = {r.id for r in conn.execute(select(c.id).where(
                c.id.in_([o["run_id"] for o in outcomes]), c.status == STARTED))}
            steps = [dict(run_id=o["run_id"], attempt=o["attempt"], seq=i, name=s["name"],
                          started_at=s["started_at"], duration_s=s["duration_s"],
                          status=s["status"], message=s.get("message"))
                     for o in outcomes for i, s in enumerate(o.get("steps") or ())]
            if steps:
                conn.execute(insert(pipeline_steps), steps)
            closing = [o for o in outcomes if o["run_id"] in open_ids]
            if closing:
                conn.execute(
                    update(pipeline_runs).where(c.id == bindparam("b_id"))
                    .values(status=bindparam("b_status"), finished_at=now,
                            duration_s=bindparam("b_duration"), error=bindparam("b_error"),
                            next_attempt_at=bindparam("b_retry"),
                            version=func.coalesce(bindparam("b_version"), c.version)),
                    [{"b_id": o["run_id"], "b_status": o["status"],
                      "b_duration": o["duration_s"], "b_error": o.get("error"),
                      "b_retry": o.get("next_attempt_at"), "b_version": o.get("version")}
                     for o in closing])
            replaced = [o for o in closing if o.get("results") is not None]
            if replaced:
                conn.execute(pipeline_results.delete().where(
                    pipeline_results.c.run_id.in_([o["run_id"] for o in replaced])))
                items = [dict(run_id=o["run_id"], key=k, kind=kind, value=v)
                         for o in replaced for k, kind, v in o["results"]]
                if items:
                    conn.execute(insert(pipeline_results), items)
            notes = [dict(at=now, dataset_id=o["event"][2], level=o["event"][0],
                          kind="pipeline", message=o["event"][1])
                     for o in closing if o.get("event")]
            if notes:
                conn.execute(insert(events), notes)
        return [o["run_id"] in open_ids for o in outcomes]

    def cancel(self, run_id: int) -> bool:
        """Cancel a run that has not ended (a failed run waiting for its retry too)."""
        with self.engine.begin() as conn:
            result = conn.execute(update(pipeline_runs).where(
                pipeline_runs.c.id == run_id,
                or_(pipeline_runs.c.status.in_(OPEN_STATES),
                    and_(pipeline_runs.c.status == ERROR,
                         pipeline_runs.c.next_attempt_at.is_not(None))))
                .values(status=CANCELLED, next_attempt_at=None, finished_at=utcnow()))
            return result.rowcount == 1

    def statuses(self, run_ids: Iterable[int]) -> dict[int, str]:
        """The status of each of ``run_ids``."""
        ids = list(run_ids)
        if not ids:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(select(pipeline_runs.c.id, pipeline_runs.c.status)
                                .where(pipeline_runs.c.id.in_(ids)))
            return {r.id: r.status for r in rows}

    def runs_of_dataset(self, dataset_id: int | None = None, path: str | None = None
                        ) -> list[Row]:
        """The runs of one dataset (by journal id or by folder), oldest first."""
        conditions = []
        if dataset_id is not None:
            conditions.append(pipeline_runs.c.dataset_id == dataset_id)
        if path is not None:
            conditions.append(pipeline_runs.c.dataset_path == path)
        query = select(pipeline_runs).where(or_(*conditions)).order_by(pipeline_runs.c.id)
        with self.engine.connect() as conn:
            return list(conn.execute(query))

    def query(self, *, workflow: str | None = None, status: str | None = None,
              since: dt.datetime | None = None, initiator: str | None = None,
              order: str = "-id", limit: int = 50, offset: int = 0) -> list[Row]:
        """One page of runs matching the filters (``order``: a column, ``-`` for descending)."""
        column = pipeline_runs.c[order.lstrip("-")]
        query = select(pipeline_runs).where(*self._filters(workflow, status, since, initiator))
        query = query.order_by((column.desc() if order.startswith("-") else column.asc())
                               .nulls_last(),
                               pipeline_runs.c.id.desc()).limit(limit).offset(offset)
        with self.engine.connect() as conn:
            return list(conn.execute(query))

    def count(self, *, workflow: str | None = None, status: str | None = None,
              since: dt.datetime | None = None, initiator: str | None = None) -> int:
        """How many runs match the filters."""
        query = select(func.count()).select_from(pipeline_runs).where(
            *self._filters(workflow, status, since, initiator))
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    @staticmethod
    def _filters(workflow: str | None, status: str | None, since: dt.datetime | None,
                 initiator: str | None) -> list[Any]:
        conditions = []
        if workflow:
            conditions.append(pipeline_runs.c.workflow == workflow)
        if status:
            conditions.append(pipeline_runs.c.status == status)
        if since is not None:
            conditions.append(pipeline_runs.c.created_at >= since)
        if initiator:
            conditions.append(pipeline_runs.c.initiator == initiator)
        return conditions

    def stats_rows(self, by: str, since: dt.datetime | None = None) -> list[tuple[Any, ...]]:
        """``(key, status, duration_s)`` of every run (since ``since``).

        ``by`` is ``day`` (the UTC date, computed by the database: parsing 100,000
        timestamps in Python would cost more than the statistics), ``workflow`` or
        ``initiator``.
        """
        c = pipeline_runs.c
        if by == "day" and self.engine.dialect.name == "sqlite":  # stored as UTC text
            key = func.substr(c.created_at, 1, 10, type_=String)
        elif by == "day":
            key = func.to_char(func.timezone("UTC", c.created_at), "YYYY-MM-DD",
                               type_=String)
        else:
            key = c[by]
        query = select(key, c.status, c.duration_s)
        if since is not None:
            query = query.where(c.created_at >= since)
        with self.engine.connect() as conn:
            # the driver's own tuples: no column needs converting (text and floats), and
            # building 100,000 Row objects costs three times the query itself
            result = conn.execute(query)
            try:
                return result.cursor.fetchall()
            finally:
                result.close()

    def errors(self, since: dt.datetime | None = None) -> list[tuple[str, str]]:
        """``(workflow, error)`` of every failed attempt's run (since ``since``)."""
        c = pipeline_runs.c
        query = select(c.workflow, c.error).where(c.error.is_not(None))
        if since is not None:
            query = query.where(c.created_at >= since)
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(query)]

    def workflows_seen(self) -> list[str]:
        """Workflow names that have runs."""
        with self.engine.connect() as conn:
            return [r[0] for r in conn.execute(select(pipeline_runs.c.workflow).distinct())]

    # --- steps and results ------------------------------------------------------------------

    def steps(self, run_id: int) -> list[Row]:
        """The step log of a run, every attempt, in order."""
        with self.engine.connect() as conn:
            return list(conn.execute(select(pipeline_steps).where(
                pipeline_steps.c.run_id == run_id).order_by(pipeline_steps.c.attempt,
                                                            pipeline_steps.c.seq)))

    def results(self, run_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        """The result items of runs, decoded: ``{run_id: {key: value}}``."""
        ids = list(run_ids)
        found: dict[int, dict[str, Any]] = {i: {} for i in ids}
        if not ids:
            return found
        with self.engine.connect() as conn:
            rows = conn.execute(select(pipeline_results).where(
                pipeline_results.c.run_id.in_(ids)).order_by(pipeline_results.c.id))
            for r in rows:
                found[r.run_id][r.key] = json.loads(r.value)
        return found

    def open_runs(self, limit: int = 5) -> tuple[dict[str, int], list[Row]]:
        """Runs not ended: counts (``started``, ``created``, ``retrying``) and the newest.

        ``retrying``: failed attempts with a retry planned (status error, next attempt set).
        """
        c = pipeline_runs.c
        condition = or_(c.status.in_(OPEN_STATES),
                        and_(c.status == ERROR, c.next_attempt_at.is_not(None)))
        counts = {STARTED: 0, CREATED: 0, "retrying": 0}
        with self.engine.connect() as conn:
            for status, count in conn.execute(select(c.status, func.count())
                                              .where(condition).group_by(c.status)):
                counts["retrying" if status == ERROR else status] = int(count)
            rows = list(conn.execute(select(pipeline_runs).where(condition)
                                     .order_by(c.id.desc()).limit(limit)))
        return counts, rows

    def failed_since(self, since: dt.datetime, limit: int = 5) -> tuple[int, list[Row]]:
        """Runs that ended in error (no retry planned) or timeout since ``since``: how
        many, and the newest."""
        c = pipeline_runs.c
        condition = and_(c.finished_at >= since, or_(
            c.status == TIMEOUT, and_(c.status == ERROR, c.next_attempt_at.is_(None))))
        with self.engine.connect() as conn:
            count = int(conn.execute(select(func.count()).select_from(pipeline_runs)
                                     .where(condition)).scalar_one())
            rows = list(conn.execute(select(pipeline_runs).where(condition)
                                     .order_by(c.finished_at.desc(), c.id.desc()).limit(limit)))
        return count, rows

    # --- engines (so a run whose engine is gone is noticed) ---------------------------------

    def register_engine(self, engine_id: str, host: str, pid: int) -> None:
        """Record a starting engine."""
        now = utcnow()
        with self.engine.begin() as conn:
            conn.execute(insert(pipeline_engines).values(id=engine_id, host=host, pid=pid,
                                                         started_at=now, heartbeat_at=now))

    def engine_heartbeat(self, engine_id: str) -> None:
        """Record that an engine is alive."""
        with self.engine.begin() as conn:
            conn.execute(update(pipeline_engines).where(pipeline_engines.c.id == engine_id)
                         .values(heartbeat_at=utcnow()))

    def engine_stopped(self, engine_id: str) -> None:
        """Record a clean engine stop."""
        with self.engine.begin() as conn:
            conn.execute(update(pipeline_engines).where(pipeline_engines.c.id == engine_id)
                         .values(stopped_at=utcnow()))

    def engines(self) -> dict[str, Row]:
        """Every engine ever registered, by id."""
        with self.engine.connect() as conn:
            return {r.id: r for r in conn.execute(select(pipeline_engines))}

    def started_runs(self) -> list[Row]:
        """Runs in state started (any engine)."""
        with self.engine.connect() as conn:
            return list(conn.execute(select(pipeline_runs).where(
                pipeline_runs.c.status == STARTED)))

    # --- reporting to the hub (autotx_lib.hub.reporter) -----------------------------------

    def runs_after(self, run_id: int, limit: int,
                   settled_before: dt.datetime | None = None) -> list[Row]:
        """Runs with an id above ``run_id``, oldest first (an outbox cursor reads them).

        ``settled_before``: only runs created before then (on a server database ids are
        handed out before commit, so a just-created run may still appear below others).
        """
        query = select(pipeline_runs).where(pipeline_runs.c.id > run_id)
        if settled_before is not None:
            query = query.where(pipeline_runs.c.created_at <= settled_before)
        with self.engine.connect() as conn:
            return list(conn.execute(query.order_by(pipeline_runs.c.id).limit(limit)))

    def unended_runs(self, also: Iterable[int] = ()) -> list[Row]:
        """Runs that may still change (created, started, or failed with a retry due) and
        the runs ``also`` names, by id."""
        c = pipeline_runs.c
        condition = or_(c.status.in_(OPEN_STATES), c.next_attempt_at.is_not(None))
        ids = list(also)
        if ids:
            condition = or_(condition, c.id.in_(ids))
        with self.engine.connect() as conn:
            return list(conn.execute(select(pipeline_runs).where(condition).order_by(c.id)))


__all__ = ["PipelineStore", "pipeline_runs", "pipeline_steps", "pipeline_results",
           "pipeline_engines", "RUN_STATES", "CREATED", "STARTED", "FINISHED", "ERROR",
           "CANCELLED", "TIMEOUT", "aware", "utcnow"]
