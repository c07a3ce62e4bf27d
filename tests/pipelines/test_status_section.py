"""``autotx status`` has a pipelines section: runs under way, runs failed in the last day."""

from __future__ import annotations

import datetime as dt
import json

from typer.testing import CliRunner

from autotx_lib.cli import app
from autotx_lib.journal import Journal
from autotx_lib.journal.pipeline_runs import PipelineStore, pipeline_runs, utcnow
from autotx_lib.pipelines.log import pipelines_status, pipelines_status_lines

from .conftest import write_config


def add(store: PipelineStore, name: str, status: str, *, ago_h: float = 0.5,
        retry: bool = False, error: str | None = None) -> int:
    now = utcnow()
    run_id, _ = store.add_run(workflow="plate-qc", version="1", initiator="scope-1",
                              dataset_path=f"/store/alice/{name}", user="alice")
    values = {"status": status, "error": error,
              "finished_at": now - dt.timedelta(hours=ago_h)
              if status in ("error", "timeout", "finished") else None,
              "next_attempt_at": now + dt.timedelta(minutes=5) if retry else None}
    with store.engine.begin() as conn:
        conn.execute(pipeline_runs.update().where(pipeline_runs.c.id == run_id).values(**values))
    return run_id


def test_status_counts_runs_under_way_and_failures_of_the_last_day(omero_facility, tmp_path):
    journal = Journal(omero_facility.journal_url)
    store = PipelineStore(journal)
    running = add(store, "p1", "started")
    add(store, "p2", "created")
    retrying = add(store, "p3", "error", retry=True, error="OSError: share gone")
    failed = add(store, "p4", "error", error="ValueError: no plate found")
    timed_out = add(store, "p5", "timeout", ago_h=2, error="still running after 3600 s")
    add(store, "p6", "error", ago_h=30, error="old news")  # more than a day ago
    add(store, "p7", "finished")

    summary = pipelines_status(journal)
    assert (summary["started"], summary["waiting"], summary["retrying"], summary["failed"]) \
        == (1, 1, 1, 2)
    assert [r["id"] for r in summary["failures"]] == [failed, timed_out]  # newest first
    assert {r["id"] for r in summary["under_way"]} == {running, running + 1, retrying}
    assert summary["failures"][0]["dataset"] == "alice/p4"
    lines = pipelines_status_lines(summary)
    assert lines[0].startswith("pipelines: 1 running, 1 waiting, 1 to retry; 2 failed in "
                               "the last day")
    assert f"  run {retrying} plate-qc on alice/p3: to retry" in lines
    assert f"  run {failed} plate-qc on alice/p4 error: ValueError: no plate found" in lines
    assert not any("old news" in line for line in lines)

    config_file = write_config(omero_facility, tmp_path / "autotx.toml")
    result = CliRunner().invoke(app, ["status", "-c", str(config_file)])
    assert result.exit_code == 0, result.output
    assert "pipelines: 1 running" in result.output and "no plate found" in result.output
    as_json = CliRunner().invoke(app, ["status", "-c", str(config_file), "--json"])
    assert json.loads(as_json.stdout)["pipelines"]["failed"] == 2


def test_no_pipelines_section_when_nothing_runs_or_failed(omero_facility):
    journal = Journal(omero_facility.journal_url)
    add(PipelineStore(journal), "p1", "finished")
    assert pipelines_status_lines(pipelines_status(omero_facility)) == []
