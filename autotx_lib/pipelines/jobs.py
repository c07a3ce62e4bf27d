"""The journal's old ``jobs`` table and a runner for it (no longer used by autotx itself).

The OMERO import, the only kind of job autotx queued, is now the ``omero-import`` workflow
of the pipeline engine (:mod:`autotx_lib.pipelines.omero_import`; unfinished old jobs are
moved onto it by :func:`~autotx_lib.pipelines.omero_import.adopt_legacy_jobs`). This
module stays for scripts and notebooks that run their own handlers over the table; new
code records pipeline runs instead.

A job is a row of the journal's ``jobs`` table (kind, dataset, JSON payload). It goes
``created`` -> ``started`` -> ``finished``; a failed attempt becomes ``error`` with
``next_attempt_at`` set (it is retried then, after a capped exponential backoff) or, once
attempts are used up or the error is permanent, ``error`` with no next attempt;
``cancelled`` jobs are never run. Every attempt records its duration and error text, and
writes an event to the journal, so ``autotx status`` and the transfer monitor show them.

The work itself is a *handler* per job kind, ``handler(job) -> dict`` (the job's result),
injected into :class:`JobRunner`; tests give it fakes that fail the way the real step
fails. An exception with ``retryable = False`` (or an ImportError: a missing extra)
fails the job at once.

Examples
--------
>>> from autotx_lib.journal import Journal
>>> journal = Journal("sqlite://")
>>> job_id = journal.add_job("echo", None, {"text": "hi"})
>>> runner = JobRunner(journal, {"echo": lambda job: {"said": job.payload["text"]}})
>>> [(o.job_id, o.state) for o in runner.run_once()]
[(1, 'finished')]
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from autotx_lib.journal import Journal, utcnow
from autotx_lib.journal.jobs import CANCELLED, CREATED, ERROR, FINISHED, STARTED
from autotx_lib.transfer.status import JobStatus

log = logging.getLogger("autotx.jobs")



class PermanentJobError(Exception):
    """Raise from a handler to fail a job without retrying it."""

    retryable = False


@dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential backoff: ``first * factor**(attempt-1)``, at most ``cap`` seconds.

    Examples
    --------
    >>> policy = RetryPolicy(max_attempts=5, first_seconds=60, cap_seconds=300)
    >>> [policy.delay(n) for n in (1, 2, 3, 4)]
    [60.0, 120.0, 240.0, 300.0]
    """

    max_attempts: int = 5
    first_seconds: float = 60.0
    cap_seconds: float = 3600.0
    factor: float = 2.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.first_seconds < 0 or self.cap_seconds < 0 \
                or self.factor < 1:
            raise ValueError(f"invalid retry policy {self}: max_attempts >= 1, seconds >= 0, "
                             "factor >= 1")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return float(min(self.cap_seconds, self.first_seconds * self.factor ** max(0, attempt - 1)))


@dataclass(frozen=True)
class Job:
    """A job as a handler sees it."""

    id: int
    kind: str
    dataset_id: int | None
    payload: dict[str, Any]
    attempt: int  # 1 for the first try


@dataclass(frozen=True)
class JobOutcome:
    """What one attempt did."""

    job_id: int
    kind: str
    state: str  # finished or error
    attempt: int
    duration_s: float
    error: str | None = None
    retry_at: dt.datetime | None = None
    result: dict[str, Any] = field(default_factory=dict)


def _retryable(error: BaseException) -> bool:
    if isinstance(error, ImportError):
        return False  # a missing extra does not install itself
    return bool(getattr(error, "retryable", True))


def describe_error(error: BaseException) -> str:
    """``Type: message`` (one paragraph, at most 2000 characters)."""
    text = str(error).strip() or repr(error)
    return f"{type(error).__name__}: {text}"[:2000]


class JobRunner:
    """Runs due jobs, one at a time, in its own loop (a thread, or the foreground).

    Parameters
    ----------
    journal : Journal
    handlers : mapping of kind to callable
        ``handler(job: Job) -> dict | None``; raising fails the attempt.
    policy : RetryPolicy or mapping of kind to RetryPolicy
    clock : callable, optional
        Aware UTC now (tests move time forward with it).
    stale_after_seconds : float
        A job ``started`` longer ago than this (its runner died) is due again.
    on_outcome : callable, optional
        Receives every :class:`JobOutcome`.
    """

    def __init__(self, journal: Journal, handlers: Mapping[str, Callable[[Job], Any]], *,
                 policy: RetryPolicy | Mapping[str, RetryPolicy] | None = None,
                 clock: Callable[[], dt.datetime] = utcnow,
                 stale_after_seconds: float = 6 * 3600,
                 on_outcome: Callable[[JobOutcome], None] | None = None):
        self.journal = journal
        self.handlers = dict(handlers)
        self.policy = policy or RetryPolicy()
        self.clock = clock
        self.stale_after_seconds = stale_after_seconds
        self.on_outcome = on_outcome
        self.stop_requested = threading.Event()
        self._thread: threading.Thread | None = None

    def policy_for(self, kind: str) -> RetryPolicy:
        if isinstance(self.policy, RetryPolicy):
            return self.policy
        return self.policy.get(kind) or RetryPolicy()

    # --- choosing and claiming -----------------------------------------------------

    def due(self) -> list[Any]:
        """Journal rows of the jobs to run now, oldest first (only kinds we handle)."""
        now = self.clock()
        return self.journal.due_jobs(self.handlers, now,
                                     now - dt.timedelta(seconds=self.stale_after_seconds))

    def _claim(self, row: Any) -> bool:
        """Mark the job started, unless another runner got there first."""
        return self.journal.claim_job(row, self.clock())

    def _close(self, job_id: int, **values: Any) -> bool:
        """Record an attempt's end, unless the job was cancelled meanwhile."""
        return self.journal.close_job(job_id, **values)

    # --- running ---------------------------------------------------------------------

    def run_job(self, row: Any) -> JobOutcome | None:
        """Run one job row (claimed first); None when another runner took it."""
        if not self._claim(row):
            return None
        attempt = row.attempts + 1
        payload = json.loads(row.payload or "{}")
        job = Job(row.id, row.kind, row.dataset_id, payload, attempt)
        started = time.monotonic()
        try:
            result = self.handlers[row.kind](job) or {}
        except Exception as error:  # noqa: BLE001 - every failure is recorded, none escapes
            duration = time.monotonic() - started
            return self._failed(job, error, duration)
        duration = time.monotonic() - started
        if not self._close(row.id, state=FINISHED, finished_at=self.clock(), duration_s=duration,
                           error=None, result=json.dumps(dict(result), default=str)):
            return None  # cancelled while it ran
        self._event("info", f"{row.kind} job {row.id} finished in {duration:.1f} s"
                    + (f" (attempt {attempt})" if attempt > 1 else ""), row.dataset_id)
        return self._report(JobOutcome(row.id, row.kind, FINISHED, attempt, duration,
                                       result=dict(result)))

    def _failed(self, job: Job, error: Exception, duration: float) -> JobOutcome:
        text = describe_error(error)
        policy = self.policy_for(job.kind)
        retry_at = None
        if _retryable(error) and job.attempt < policy.max_attempts:
            retry_at = self.clock() + dt.timedelta(seconds=policy.delay(job.attempt))
        if not self._close(job.id, state=ERROR, finished_at=self.clock(), duration_s=duration,
                           error=text, next_attempt_at=retry_at):
            return JobOutcome(job.id, job.kind, CANCELLED, job.attempt, duration, text)
        if retry_at is not None:
            message = (f"{job.kind} job {job.id} failed (attempt {job.attempt} of "
                       f"{policy.max_attempts}), retried at {retry_at:%Y-%m-%d %H:%M:%S} UTC: "
                       f"{text}")
            self._event("warning", message, job.dataset_id)
        else:
            why = "not retryable" if not _retryable(error) else \
                f"gave up after {job.attempt} attempts"
            self._event("error", f"{job.kind} job {job.id} failed ({why}): {text}",
                        job.dataset_id)
        log.warning("%s job %s attempt %s failed: %s", job.kind, job.id, job.attempt, text)
        return self._report(JobOutcome(job.id, job.kind, ERROR, job.attempt, duration, text,
                                       retry_at))

    def _report(self, outcome: JobOutcome) -> JobOutcome:
        if self.on_outcome is not None:
            try:
                self.on_outcome(outcome)
            except Exception:  # noqa: BLE001 - a face's printing never stops the runner
                log.exception("on_outcome callback failed")
        return outcome

    def _event(self, level: str, message: str, dataset_id: int | None) -> None:
        try:
            self.journal.log(level, "job", message, dataset_id)
        except Exception:  # noqa: BLE001
            log.exception("cannot write a job event to the journal")

    def run_once(self) -> list[JobOutcome]:
        """Run every job due now, one after the other; return what each attempt did."""
        outcomes = []
        for row in self.due():
            if self.stop_requested.is_set():
                break
            outcome = self.run_job(row)
            if outcome is not None:
                outcomes.append(outcome)
        return outcomes

    def pending(self) -> int:
        """Jobs that will still run: created, or failed with a retry planned."""
        rows = self.journal.jobs_in([CREATED, ERROR, STARTED])
        return sum(1 for r in rows if r.kind in self.handlers
                   and (r.state != ERROR or r.next_attempt_at is not None))

    def run_forever(self, poll_seconds: float = 5.0) -> None:
        """Loop until :meth:`stop`; a failing journal is logged and retried, never fatal."""
        while not self.stop_requested.is_set():
            try:
                self.run_once()
            except Exception:  # noqa: BLE001 - e.g. the database is briefly unreachable
                log.exception("job runner: cannot read the journal; trying again")
            self.stop_requested.wait(poll_seconds)

    def start(self, poll_seconds: float = 5.0) -> threading.Thread:
        """Run :meth:`run_forever` in a daemon thread (separate from any copy)."""
        if self._thread is not None and self._thread.is_alive():
            return self._thread
        self.stop_requested.clear()
        self._thread = threading.Thread(target=self.run_forever, args=(poll_seconds,),
                                        name="autotx-jobs", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self, timeout: float | None = 5.0) -> None:
        """Ask the loop to stop after the job under way; wait up to ``timeout`` seconds."""
        self.stop_requested.set()
        if self._thread is not None:
            self._thread.join(timeout)


def list_jobs(journal: Journal, limit: int = 30) -> list[JobStatus]:
    """Recent jobs, newest first, as :class:`~autotx_lib.transfer.status.JobStatus`."""
    return [JobStatus.from_row(r) for r in journal.recent_jobs(limit)]


def cancel_job(journal: Journal, job_id: int) -> bool:
    """Cancel a job that has not finished; True when it was cancelled.

    A job under way (``started``) is marked cancelled too: its result is then ignored
    and it is not retried.
    """
    return journal.cancel_job(job_id)


def retry_job(journal: Journal, job_id: int) -> bool:
    """Make a failed or cancelled job due now (its attempts count on); True when done."""
    return journal.retry_job(job_id)


__all__ = ["JobRunner", "Job", "JobOutcome", "RetryPolicy", "PermanentJobError",
           "cancel_job", "retry_job", "list_jobs", "JobStatus", "describe_error",
           "CREATED", "STARTED", "FINISHED", "ERROR", "CANCELLED"]
