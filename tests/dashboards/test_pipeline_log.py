"""The PipelineLog dashboard over a real journal: filter, page, click a run, statistics."""

from __future__ import annotations

import datetime as dt
import json

import pytest

pytest.importorskip("ipywidgets", reason="the dashboards need ipywidgets (the viz extra)")

from autotx_lib.dashboards import PipelineLog  # noqa: E402
from autotx_lib.journal import Journal  # noqa: E402
from autotx_lib.journal.pipeline_runs import PipelineStore  # noqa: E402
from autotx_lib.pages import pipelines_page  # noqa: E402
from tests.pipelines.conftest import pipeline_config  # noqa: E402

DAY = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)


@pytest.fixture
def config(tmp_path):
    config = pipeline_config(tmp_path)
    store = PipelineStore(Journal(config.journal_url))
    store.add_runs([dict(workflow="plate-qc" if i % 2 else "previews", version="1",
                         dataset_path=f"/store/alice/d{i}", user="alice", initiator="scope-1",
                         status="error" if i == 5 else "finished", params=json.dumps({}),
                         attempts=1, max_attempts=3, created_at=DAY + dt.timedelta(hours=i),
                         duration_s=float(i), error="ValueError: bad" if i == 5 else None)
                    for i in range(30)])
    run_id, _ = store.add_run(workflow="plate-qc", version="1", dataset_path="/store/alice/p",
                              initiator="scope-1", user="alice")
    store.claim(store.run(run_id), "engine")
    start = dt.datetime.now(dt.UTC)
    store.record_outcomes([dict(
        run_id=run_id, attempt=1, status="finished", duration_s=2.5,
        steps=[{"name": "discover plate", "started_at": start, "duration_s": 0.5,
                "status": "finished", "message": "imagexpress: 8 images"}],
        results=[("flagged_wells", "json", '["B02"]'), ("usable", "bool", "false")])])
    return config


def test_filter_page_and_click_a_run(config):
    board = PipelineLog(config, page_size=10)
    assert len(board.runs.options) == 10 and board.counter.value == "31 runs; page 1 of 4"
    assert board.runs.options[0][1] == 31 and board.previous.disabled
    board.next.click()
    assert board.runs.options[0][1] == 21 and board.counter.value.endswith("page 2 of 4")
    board.status.value = "error"
    assert [value for _label, value in board.runs.options] == [6]
    assert board.counter.value == "1 runs; page 1 of 1" and board.next.disabled
    board.status.value = "(all)"
    board.workflow.value = "plate-qc"
    board.sort.value = "longest first"
    assert board.runs.options[0][1] == 30  # duration 29 s, the longest plate-qc run
    board.sort.value = "newest first"
    board.runs.value = 31
    assert "discover plate" in board.detail.value and "imagexpress: 8 images" in board.detail.value
    assert "flagged_wells" in board.detail.value and "B02" in board.detail.value
    assert "history of /store/alice/p" in board.history.value
    assert "plate-qc 1" in board.history.value and "flagged_wells: 1" in board.history.value
    board.since.value = dt.date(2030, 1, 1)
    assert board.runs.options == () or list(board.runs.options) == []
    assert board.counter.value == "no runs match"


def test_statistics_charts_hold_the_counts(config):
    board = PipelineLog(config)
    stacked, durations = board.statistics_figures()
    data = stacked.renderers[0].data_source.data
    assert list(data["day"]) == ["2026-11-30", "2026-12-01"]
    assert sum(data["finished"]) == 30 and sum(data["error"]) == 1
    assert list(durations.renderers[0].data_source.data["workflow"]) == ["plate-qc", "previews"]
    board.tabs.selected_index = 1
    assert len(board.charts.children) == 2 and "ValueError: bad" in board.charts.children[1].value


def test_the_page_says_what_to_do_without_a_configuration(monkeypatch, config, tmp_path):
    monkeypatch.delenv("AUTOTX_CONFIG", raising=False)
    assert "autotx dashboard pipelines -c CONFIG" in pipelines_page().data
    path = tmp_path / "autotx.toml"
    path.write_text(f'incoming = "{config.incoming}"\nmanaged = "{config.managed}"\n'
                    f'destination = "{config.destination}"\n')
    monkeypatch.setenv("AUTOTX_CONFIG", str(path))
    assert pipelines_page().children[1].children[0].children[2].options[0][1] == 31
