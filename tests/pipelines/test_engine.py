"""The pipeline engine on a real dask cluster and a real SQLite journal: runs, faults, log."""

from __future__ import annotations

import datetime as dt

import pytest

from autotx_lib.journal import Journal
from autotx_lib.journal.pipeline_runs import PipelineStore
from autotx_lib.pipelines import log as runlog
from autotx_lib.pipelines.engine import PipelineEngine, cancel_run, rerun
from autotx_lib.pipelines.registry import Registry, registry_for
from tests.conftest import wait_for
from tests.pipelines import sample_workflows
from tests.pipelines.conftest import closed_port, delivered_dataset, pipeline_config


@pytest.fixture
def setup(tmp_path, dask_client):
    config = pipeline_config(tmp_path)
    journal = Journal(config.journal_url)
    engine = PipelineEngine(config, journal, client=dask_client,
                            registry=registry_for(config, sample_workflows.SAMPLE))
    yield config, journal, engine
    sample_workflows.RELEASE.set()
    engine.stop()
    sample_workflows.RELEASE.clear()


def test_a_run_records_status_duration_typed_results_and_its_steps(setup):
    config, journal, engine = setup
    row = delivered_dataset(config, journal, "stack1", {"a.tif": b"1", "sub/b.tif": b"22"})
    run_id = engine.record("count-files", row.dest_path, initiator="scope-1",
                           dataset_id=row.id)
    engine.run_until_idle(timeout_s=30)
    detail = runlog.run_detail(journal, run_id)
    assert detail["status"] == "finished" and detail["version"] == "3"
    assert detail["duration_s"] > 0 and detail["attempts"] == 1
    assert detail["results"] == {"files": 2, "names": ["a.tif", "b.tif"], "ratio": 0.5,
                                 "ok": True, "label": "done"}
    assert list(detail["steps"]["name"]) == ["list", "write"]
    assert detail["steps"]["message"][0] == "2 files"
    assert (detail["steps"]["status"] == "finished").all()
    # the results go to the results area, never into the delivered (manifested) folder
    written = config.managed / "results" / "alice" / "stack1" / str(run_id) / "names.txt"
    assert written.read_text() == "a.tif\nb.tif"
    assert sorted(p.name for p in (config.destination / "alice" / "stack1").rglob("*")) == \
        ["a.tif", "b.tif", "sub"]


def test_a_workflow_that_raises_is_an_error_with_its_message_and_failed_step(setup, tmp_path):
    config, journal, engine = setup
    run_id = engine.record("raises", tmp_path)
    engine.run_until_idle(timeout_s=30)
    detail = runlog.run_detail(journal, run_id)
    assert detail["status"] == "error" and detail["next_attempt_at"] is None  # a bug: no retry
    assert detail["error"] == "ValueError: the threshold must be positive"
    assert detail["steps"][["name", "status"]].values.tolist() == [["compute", "error"]]


def test_a_retryable_error_is_retried_with_backoff_until_it_succeeds(setup, tmp_path):
    config, journal, engine = setup
    run_id = engine.record("flaky", tmp_path, params={"succeed_at": 3})
    engine.run_until_idle(timeout_s=30)
    detail = runlog.run_detail(journal, run_id)
    assert detail["status"] == "finished" and detail["attempts"] == 3
    assert detail["results"] == {"attempt": 3}
    assert detail["steps"]["status"].tolist() == ["error", "error", "finished"]
    events = [e.message for e in journal.recent_events(10)]
    assert any("failed (attempt 1 of 3), retried" in m for m in events)


def test_retries_stop_after_max_attempts_and_the_backoff_doubles(tmp_path, dask_client):
    config = pipeline_config(tmp_path, retry_seconds=60, max_retry_seconds=100, max_attempts=2)
    journal = Journal(config.journal_url)
    engine = PipelineEngine(config, journal, client=dask_client,
                            registry=registry_for(config, sample_workflows.SAMPLE))
    run_id = engine.record("flaky", tmp_path)
    before = dt.datetime.now(dt.UTC)
    engine.run_until_idle(timeout_s=30)  # the retry is planned 60 s later: idle now
    detail = runlog.run_detail(journal, run_id)
    assert detail["status"] == "error" and detail["attempts"] == 1
    assert 59 <= (detail["next_attempt_at"] - before).total_seconds() <= 70
    store = PipelineStore(journal)
    with store.engine.begin() as conn:  # the retry falls due
        conn.execute(store_update(run_id, next_attempt_at=before))
    engine.run_until_idle(timeout_s=30)
    detail = runlog.run_detail(journal, run_id)
    assert detail["attempts"] == 2 and detail["next_attempt_at"] is None  # gave up
    assert detail["error"] == "ConnectionError: share unreachable (attempt 2)"
    engine.stop()


def store_update(run_id, **values):
    from sqlalchemy import update

    from autotx_lib.journal.pipeline_runs import pipeline_runs

    return update(pipeline_runs).where(pipeline_runs.c.id == run_id).values(**values)


def test_a_hanging_workflow_times_out_and_is_marked_timeout(setup, tmp_path):
    config, journal, engine = setup
    run_id = engine.record("hangs", tmp_path, timeout_s=0.5)
    engine.run_until_idle(timeout_s=30)
    detail = runlog.run_detail(journal, run_id)
    assert detail["status"] == "timeout"
    assert "timeout of 0.5 s" in detail["error"] and 0.5 <= detail["duration_s"] < 10


def test_an_unserialisable_result_is_a_clear_error(setup, tmp_path):
    config, journal, engine = setup
    run_id = engine.record("unserialisable", tmp_path)
    engine.run_until_idle(timeout_s=30)
    detail = runlog.run_detail(journal, run_id)
    assert detail["status"] == "error"
    assert "result 'handle' is a lock, which the log cannot hold" in detail["error"]


def test_a_workflow_missing_after_an_upgrade_fails_its_run_with_what_to_do(setup, tmp_path,
                                                                          dask_client):
    config, journal, engine = setup
    run_id = engine.record("count-files", tmp_path)
    upgraded = PipelineEngine(config, journal, client=dask_client, registry=Registry())
    upgraded.run_until_idle(timeout_s=30)
    detail = runlog.run_detail(journal, run_id)
    assert detail["status"] == "error"
    assert "no workflow called 'count-files' is installed" in detail["error"]
    assert "recorded with version 3" in detail["error"]
    upgraded.stop()


def test_a_dataset_deleted_before_its_run_starts_is_an_error_not_retried(setup, tmp_path):
    config, journal, engine = setup
    folder = tmp_path / "gone"
    folder.mkdir()
    run_id = engine.record("count-files", folder)
    folder.rmdir()
    engine.run_until_idle(timeout_s=30)
    detail = runlog.run_detail(journal, run_id)
    assert detail["status"] == "error" and detail["next_attempt_at"] is None
    assert f"{folder} does not exist" in detail["error"]
    assert f"autotx pipelines rerun {run_id}" in detail["error"]


def test_cancel_a_running_run_and_rerun_it(setup, tmp_path):
    config, journal, engine = setup
    run_id = engine.record("hangs", tmp_path)
    engine.submit_due()
    wait_for(lambda: PipelineStore(journal).run(run_id).status == "started", 10, "started")
    assert cancel_run(journal, run_id)
    assert engine.poll() == 1 and not engine.active
    assert runlog.run_detail(journal, run_id)["status"] == "cancelled"
    assert not cancel_run(journal, run_id)  # already ended
    sample_workflows.RELEASE.set()
    new_id = rerun(config, journal, run_id, registry=engine.registry)
    engine.run_until_idle(timeout_s=30)
    detail = runlog.run_detail(journal, new_id)
    assert detail["status"] == "finished" and detail["rerun_of"] == run_id
    assert runlog.run_detail(journal, run_id)["status"] == "cancelled"


def test_a_run_left_started_by_an_engine_that_is_gone_is_marked_on_the_next_start(
        setup, tmp_path, dask_client):
    config, journal, engine = setup
    run_id = engine.record("count-files", tmp_path)
    store = PipelineStore(journal)
    store.register_engine("elsewhere:1:dead", "elsewhere", 1)
    store.engine_stopped("elsewhere:1:dead")  # e.g. the agent was restarted
    assert store.claim(store.run(run_id), "elsewhere:1:dead")
    fresh = PipelineEngine(config, journal, client=dask_client, registry=engine.registry)
    assert fresh.start_engine() == 1
    detail = runlog.run_detail(journal, run_id)
    assert detail["status"] == "error" and "stopped before it ended" in detail["error"]
    fresh.run_until_idle(timeout_s=30)  # retryable: it runs again
    assert runlog.run_detail(journal, run_id)["status"] == "finished"
    fresh.stop()


def test_heavy_steps_fan_out_as_dask_tasks(setup, tmp_path):
    config, journal, engine = setup
    run_id = engine.record("fan-out", tmp_path)
    engine.run_until_idle(timeout_s=30)
    assert runlog.run_detail(journal, run_id)["results"] == {"total": sum(i * i for i in
                                                                          range(20))}


def test_an_unreachable_scheduler_leaves_runs_waiting_and_they_run_later(tmp_path,
                                                                         dask_client):
    config = pipeline_config(tmp_path, scheduler=f"tcp://127.0.0.1:{closed_port()}")
    journal = Journal(config.journal_url)
    registry = registry_for(config, sample_workflows.SAMPLE)
    down = PipelineEngine(config, journal, registry=registry, connect_timeout_s=0.5)
    run_id = down.record("count-files", tmp_path)
    assert down.run_once() == 0  # no exception: logged, the run waits
    assert PipelineStore(journal).run(run_id).status == "created"
    assert down.run_once() == 0  # tried again later, not at every pass
    assert PipelineStore(journal).run(run_id).status == "created"
    up = PipelineEngine(config, journal, client=dask_client, registry=registry)
    up.run_until_idle(timeout_s=30)
    assert PipelineStore(journal).run(run_id).status == "finished"
    down.stop()
    up.stop()


def test_scheduling_a_hundred_empty_runs_keeps_every_record(setup, tmp_path):
    config, journal, engine = setup
    ids = [engine.record("count-files", tmp_path) for _ in range(100)]
    engine.run_until_idle(timeout_s=60)
    assert runlog.count(journal, status="finished") == 100
    assert set(runlog.runs(journal, limit=200)["id"]) == set(ids)
