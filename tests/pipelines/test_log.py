"""The execution log: filtered pages, statistics, errors, a dataset's history (real SQLite)."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from autotx_lib.journal import Journal
from autotx_lib.journal.pipeline_runs import PipelineStore
from autotx_lib.pipelines import log as runlog
from tests.pipelines.conftest import delivered_dataset, pipeline_config

DAY = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)


def _run(store, workflow, status, hours, duration=None, initiator="scope-1", error=None,
         dataset_id=None, path="/store/alice/d"):
    store.add_runs([dict(workflow=workflow, version="1", dataset_path=path, user="alice",
                         initiator=initiator, status=status, params=json.dumps({}), attempts=1,
                         max_attempts=3, created_at=DAY + dt.timedelta(hours=hours),
                         duration_s=duration, error=error, dataset_id=dataset_id)])


@pytest.fixture
def journal():
    journal = Journal("sqlite://")
    store = PipelineStore(journal)
    for i in range(10):  # day 1: plate-qc, 8 finished (1..8 s), 1 error, 1 timeout
        status = "finished" if i < 8 else ("error" if i == 8 else "timeout")
        _run(store, "plate-qc", status, i, duration=float(i + 1),
             error="ValueError: bad plate" if i == 8 else None)
    for i in range(4):  # day 2: previews from another instrument
        _run(store, "previews", ["finished", "created", "cancelled", "error"][i], 24 + i,
             duration=2.0 if i == 0 else None, initiator="scope-2",
             error="ValueError: bad plate" if i == 3 else None)
    return journal


def test_filtered_pages_newest_first(journal):
    page = runlog.runs(journal, workflow="plate-qc", limit=3)
    assert page["id"].tolist() == [10, 9, 8]
    assert runlog.runs(journal, workflow="plate-qc", limit=3, offset=3)["id"].tolist() == \
        [7, 6, 5]
    assert runlog.runs(journal, status="error")["workflow"].tolist() == ["previews", "plate-qc"]
    since = runlog.runs(journal, since=DAY + dt.timedelta(hours=24))
    assert set(since["workflow"]) == {"previews"} and len(since) == 4
    assert runlog.runs(journal, initiator="scope-2", order="duration_s")["id"].tolist()[0] == 11
    assert runlog.count(journal, workflow="plate-qc", status="finished") == 8
    assert str(page["created_at"].dt.tz) == "UTC"
    with pytest.raises(ValueError, match="unknown status 'done'"):
        runlog.runs(journal, status="done")
    with pytest.raises(ValueError, match="cannot sort by 'colour'"):
        runlog.runs(journal, order="colour")


def test_statistics_per_workflow_day_and_initiator(journal):
    table = runlog.statistics(journal, by="workflow")
    qc = table.loc["plate-qc"]
    assert qc["runs"] == 10 and qc["finished"] == 8 and qc["error"] == 1 and qc["timeout"] == 1
    assert qc["error_rate"] == pytest.approx(0.2)
    assert qc["p50_s"] == pytest.approx(5.5) and qc["mean_s"] == pytest.approx(5.5)
    assert qc["p90_s"] == pytest.approx(9.1)
    previews = table.loc["previews"]
    assert (previews["created"], previews["cancelled"]) == (1, 1)
    assert previews["error_rate"] == pytest.approx(0.5)  # 1 error of 2 ended
    by_day = runlog.statistics(journal, by="day")
    assert by_day.index.tolist() == ["2026-11-30", "2026-12-01"]
    assert by_day["runs"].tolist() == [10, 4]
    assert runlog.statistics(journal, by="initiator")["runs"].to_dict() == \
        {"scope-1": 10, "scope-2": 4}
    assert runlog.statistics(Journal("sqlite://"), by="day").empty
    with pytest.raises(ValueError, match="cannot group by 'user'"):
        runlog.statistics(journal, by="user")


def test_error_statistics_count_each_error(journal):
    errors = runlog.error_statistics(journal)
    assert errors.iloc[0].to_dict() == {"workflow": "plate-qc", "error": "ValueError: bad plate",
                                        "runs": 1}
    assert len(errors) == 2


def test_a_datasets_history_is_one_timeline_with_pipeline_results(tmp_path):
    config = pipeline_config(tmp_path)
    journal = Journal(config.journal_url)
    row = delivered_dataset(config, journal, "plate7", {"a.tif": b"1"})
    journal.log("info", "verify", "alice/plate7 verified", row.id)
    store = PipelineStore(journal)
    run_id, _ = store.add_run(workflow="plate-qc", version="1", dataset_path=row.dest_path,
                              initiator="scope-1", dataset_id=row.id, user="alice")
    store.claim(store.run(run_id), "e")
    store.record_outcomes([dict(run_id=run_id, attempt=1, status="finished", duration_s=3.0,
                                results=[("usable", "bool", "false"),
                                         ("verdicts", "json", '{"ok": 60, "dark": 4}'),
                                         ("flagged_wells", "json", '["B02", "C03"]')])])
    for key in (row.id, "alice/plate7", row.dest_path):
        timeline = runlog.history(journal, key)
        assert timeline["what"].tolist()[:2] == ["created", "transfer started"]
        assert "verify" in timeline["what"].tolist()
        last = timeline.iloc[-1]
        assert last["what"] == "plate-qc 1" and last["status"] == "finished"
        assert last["detail"] == "usable: False; verdicts: ok 60, dark 4; flagged_wells: 2"
        assert last["run_id"] == run_id
    assert runlog.history(journal, tmp_path / "unknown").empty
    detail = runlog.run_detail(journal, run_id)
    assert detail["results"]["flagged_wells"] == ["B02", "C03"]
    with pytest.raises(KeyError, match="no pipeline run 999"):
        runlog.run_detail(journal, 999)
