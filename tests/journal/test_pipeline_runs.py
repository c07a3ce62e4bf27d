"""Pipeline run records on SQLite and PostgreSQL: dedup, claims, outcomes, queries, statistics."""

from __future__ import annotations

import datetime as dt

import pytest

from autotx_lib.journal import Journal
from autotx_lib.journal.pipeline_runs import PipelineStore
from autotx_lib.pipelines import log as runlog


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_runs_are_claimed_once_closed_once_and_counted(backend, tmp_path, request):
    target = f"sqlite:///{tmp_path / 'j.sqlite'}" if backend == "sqlite" else \
        request.getfixturevalue("postgres_url")
    journal = Journal(target)
    store = PipelineStore(journal)
    first, new = store.add_run(workflow="plate-qc", version="1", dataset_path="/s/alice/p",
                               initiator="scope-1", dedup_key="plate-qc@/s/alice/p")
    again, new_again = store.add_run(workflow="plate-qc", version="1", dataset_path="/s/alice/p",
                                     initiator="scope-2", dedup_key="plate-qc@/s/alice/p")
    assert (new, new_again, again) == (True, False, first)
    other, _ = store.add_run(workflow="previews", version="2", dataset_path="/s/alice/q",
                             initiator="cli", max_attempts=3)
    due = store.due(dt.datetime.now(dt.UTC))
    assert [r.id for r in store.claim_many(due, "engine-a")] == [first, other]
    assert store.claim_many(due, "engine-b") == []  # another engine read the same rows
    assert store.cancel(other)
    retry_at = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
    written = store.record_outcomes([
        dict(run_id=first, attempt=1, status="finished", duration_s=2.0, version="1",
             steps=[{"name": "measure", "started_at": dt.datetime.now(dt.UTC),
                     "duration_s": 1.5, "status": "finished", "message": "8 planes"}],
             results=[("usable", "bool", "true")], event=("info", "done", None)),
        dict(run_id=other, attempt=1, status="error", duration_s=1.0, error="late",
             next_attempt_at=retry_at)])
    assert written == [True, False]  # the cancelled run keeps its status
    assert store.run(other).status == "cancelled" and store.run(first).status == "finished"
    assert store.run(first).finished_at.tzinfo is not None
    assert store.results([first]) == {first: {"usable": True}}
    assert [s.name for s in store.steps(first)] == ["measure"]
    assert journal.recent_events(1)[0].message == "done"
    today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    by_day = runlog.statistics(journal, by="day")
    assert by_day.index.tolist() == [today] and by_day.loc[today, "runs"] == 2
    page = runlog.runs(journal, since=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    assert page["id"].tolist() == [other, first]
