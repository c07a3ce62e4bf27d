"""The job runner: states, durations, errors, capped exponential backoff, cancellation."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time

import pytest

from autotx_lib.errors import MissingDependencyError
from autotx_lib.imaging import omero as om
from autotx_lib.journal import Journal, utcnow
from autotx_lib.pipelines.jobs import (
    JobRunner,
    PermanentJobError,
    RetryPolicy,
    cancel_job,
    list_jobs,
    retry_job,
)

from ..conftest import wait_for
from .conftest import closed_port


class Clock:
    """A clock the test moves forward."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


class NonZeroReturnCode(Exception):
    """Shaped like omero.cli.NonZeroReturnCode (rv, message), which `omero import` raises."""

    def __init__(self, rv: int, msg: str = "assert failed"):
        self.rv = rv
        super().__init__(msg)


def omero_cli_failure(job):
    # what import_files turns the CLI's non-zero exit into
    raise om.OmeroImportError("omero import exited with status 1", exit_code=1,
                              log_tail="ERROR formats.importer.cli.ErrorHandler: ...")


def connection_refused(job):
    om._probe("127.0.0.1", closed_port(), timeout=2)  # a real refused connection


@pytest.fixture
def journal(tmp_path):
    j = Journal(f"sqlite:///{tmp_path / 'journal.sqlite'}")
    yield j
    j.close()


def test_retry_policy_is_capped_exponential():
    policy = RetryPolicy(max_attempts=6, first_seconds=10, cap_seconds=50)
    assert [policy.delay(n) for n in range(1, 6)] == [10, 20, 40, 50, 50]
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(factor=0.5)


def test_a_job_runs_once_and_records_state_duration_and_result(journal):
    job_id = journal.add_job("echo", None, {"text": "hi"})

    def echo(job):
        time.sleep(0.05)  # the job takes time (its duration is measured), it waits for nothing
        return {"said": job.payload["text"], "attempt": job.attempt}

    outcomes = JobRunner(journal, {"echo": echo}).run_once()
    assert [(o.job_id, o.state, o.attempt) for o in outcomes] == [(job_id, "finished", 1)]
    row = journal.jobs_in(["finished"])[0]
    assert row.attempts == 1 and row.duration_s >= 0.05 and row.error is None
    assert json.loads(row.result) == {"said": "hi", "attempt": 1}
    assert row.started_at <= row.finished_at
    assert JobRunner(journal, {"echo": echo}).run_once() == []  # finished jobs stay finished
    assert any("echo job" in e.message for e in journal.recent_events(5))


@pytest.mark.parametrize("failure, text", [(omero_cli_failure, "exited with status 1"),
                                           (connection_refused, "cannot reach the OMERO server"),
                                           (lambda job: (_ for _ in ()).throw(
                                               NonZeroReturnCode(1)), "NonZeroReturnCode")])
def test_failures_like_omero_py_are_retried_with_backoff_then_given_up(journal, failure, text):
    clock = Clock()
    job_id = journal.add_job("omero-import", None, {})
    runner = JobRunner(journal, {"omero-import": failure}, clock=clock,
                       policy=RetryPolicy(max_attempts=3, first_seconds=60, cap_seconds=90))

    first = runner.run_once()
    assert [o.state for o in first] == ["error"] and text in first[0].error
    row = journal.jobs_in(["error"])[0]
    assert row.attempts == 1 and text in row.error and row.duration_s is not None
    assert row.next_attempt_at == clock.now + dt.timedelta(seconds=60)

    clock.advance(59)
    assert runner.run_once() == []  # not due yet
    clock.advance(1)
    assert [o.attempt for o in runner.run_once()] == [2]
    assert journal.jobs_in(["error"])[0].next_attempt_at == clock.now + dt.timedelta(seconds=90)

    clock.advance(90)
    last = runner.run_once()
    assert [(o.attempt, o.retry_at) for o in last] == [(3, None)]  # max_attempts: gave up
    row = journal.jobs_in(["error"])[0]
    assert row.id == job_id and row.attempts == 3 and row.next_attempt_at is None
    clock.advance(10_000)
    assert runner.run_once() == [] and runner.pending() == 0
    messages = [e.message for e in journal.recent_events(10)]
    assert any("gave up after 3 attempts" in m for m in messages)
    assert any("attempt 1 of 3" in m for m in messages)


@pytest.mark.parametrize("error", [
    om.OmeroAuthError("omero.example.org", "ann"),
    PermanentJobError("payload lacks the destination"),
    MissingDependencyError("The omero-py package is required ..."),
    om.PartialImportError("alice/run", 5, "Dataset x"),
])
def test_permanent_errors_are_not_retried(journal, error):
    journal.add_job("k", None, {})

    def fail(job):
        raise error

    outcome, = JobRunner(journal, {"k": fail}).run_once()
    assert outcome.state == "error" and outcome.retry_at is None
    assert journal.jobs_in(["error"])[0].next_attempt_at is None
    assert "not retryable" in journal.recent_events(1)[0].message


def test_a_recovering_job_finishes_on_retry(journal):
    clock = Clock()
    calls = []

    def flaky(job):
        calls.append(job.attempt)
        if job.attempt == 1:
            connection_refused(job)
        return {"ids": [1]}

    journal.add_job("k", None, {})
    runner = JobRunner(journal, {"k": flaky}, clock=clock, policy=RetryPolicy(first_seconds=5))
    runner.run_once()
    clock.advance(5)
    assert [o.state for o in runner.run_once()] == ["finished"]
    assert calls == [1, 2]
    row = journal.jobs_in(["finished"])[0]
    assert row.attempts == 2 and row.error is None


def test_cancelled_and_unknown_jobs_are_not_run_and_cancel_wins_over_a_running_job(journal):
    cancelled = journal.add_job("k", None, {})
    other_kind = journal.add_job("plate-qc", None, {})
    assert cancel_job(journal, cancelled)
    assert not cancel_job(journal, cancelled)  # already cancelled
    assert not cancel_job(journal, 999)
    ran = []
    JobRunner(journal, {"k": lambda job: ran.append(job.id)}).run_once()
    assert ran == []
    assert journal.jobs_in(["created"])[0].id == other_kind

    running = journal.add_job("k", None, {})

    def cancelled_meanwhile(job):
        cancel_job(journal, job.id)
        return {"late": True}

    assert JobRunner(journal, {"k": cancelled_meanwhile}).run_once() == []
    row = [r for r in journal.recent_jobs(10) if r.id == running][0]
    assert row.state == "cancelled" and row.result is None

    assert retry_job(journal, running)
    assert [o.state for o in JobRunner(journal, {"k": lambda job: {}}).run_once()] == ["finished"]
    assert not retry_job(journal, running)  # finished jobs are not retried


def test_two_runners_never_run_the_same_job(journal):
    journal.add_job("k", None, {})
    ran = []
    first = JobRunner(journal, {"k": lambda job: ran.append("first")})
    second = JobRunner(journal, {"k": lambda job: ran.append("second")})
    rows = second.due()
    first.run_once()
    assert second.run_job(rows[0]) is None  # the row it saw was claimed meanwhile
    assert ran == ["first"]


def test_a_job_left_started_by_a_dead_runner_is_run_again_later(journal):
    clock = Clock()
    job_id = journal.add_job("k", None, {})
    journal.update_job(job_id, state="started", started_at=clock.now, attempts=1)
    runner = JobRunner(journal, {"k": lambda job: {"attempt": job.attempt}}, clock=clock,
                       stale_after_seconds=600)
    assert runner.run_once() == []
    clock.advance(601)
    assert [(o.state, o.attempt) for o in runner.run_once()] == [("finished", 2)]


def test_background_thread_runs_jobs_and_stops(journal):
    done = threading.Event()
    runner = JobRunner(journal, {"k": lambda job: done.set()})
    runner.start(poll_seconds=0.05)
    journal.add_job("k", None, {})
    assert done.wait(5)
    runner.stop(timeout=5)
    assert not runner._thread.is_alive()
    wait_for(lambda: journal.jobs_in(["finished"]), 5, "the job to be recorded as finished")


def test_list_jobs_shows_newest_first(journal):
    for kind in ("a", "b"):
        journal.add_job(kind, None, {})
    assert [j.kind for j in list_jobs(journal)] == ["b", "a"]
    assert list_jobs(journal)[0].state == "created"
