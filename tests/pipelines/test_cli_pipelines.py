"""``autotx pipelines ...`` and ``autotx history`` on a real journal and dask cluster."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from autotx_lib.cli import app
from autotx_lib.config import load_config
from autotx_lib.journal import Journal
from tests.pipelines.conftest import delivered_dataset

cli = CliRunner()


@pytest.fixture
def facility(tmp_path, dask_client):
    (tmp_path / "storage" / "alice").mkdir(parents=True)
    path = tmp_path / "autotx.toml"
    path.write_text(
        f'incoming = "{tmp_path / "incoming"}"\nmanaged = "{tmp_path / "managed"}"\n'
        f'destination = "{tmp_path / "storage"}"\nhost_alias = "scope-1"\n'
        f'[pipelines]\nscheduler = "{dask_client.scheduler.address}"\nrun_in_agent = false\n'
        '[pipelines.workflows]\n"count-files" = "tests.pipelines.sample_workflows:count_files"\n'
        '[[pipelines.rules]]\nworkflow = "count-files"\nusers = ["alice"]\n'
        '[[pipelines.rules]]\nworkflow = "plate-qc"\nplate = true\n')
    config = load_config(path)
    return path, config, Journal(config.journal_url)


def invoke(*args: str):
    return cli.invoke(app, [str(a) for a in args])


def test_run_by_hand_then_log_show_stats_history(facility):
    path, config, journal = facility
    row = delivered_dataset(config, journal, "stack1", {"a.tif": b"1", "b.tif": b"2"})
    result = invoke("pipelines", "run", "count-files", row.dest_path, "-c", path,
                    "--param", "threshold=3")
    assert result.exit_code == 0, result.output
    assert "run 1: count-files" in result.output and "finished" in result.output
    log = json.loads(invoke("pipelines", "log", "-c", path, "--json").output)
    assert [(r["id"], r["workflow"], r["status"], r["initiator"]) for r in log] == \
        [(1, "count-files", "finished", "cli")]
    shown = invoke("pipelines", "show", "1", "-c", path)
    assert shown.exit_code == 0
    assert "files: 2" in shown.output and "list" in shown.output and "2 files" in shown.output
    detail = json.loads(invoke("pipelines", "show", "1", "-c", path, "--json").output)
    assert detail["params"] == {"threshold": 3} and detail["results"]["files"] == 2
    stats = json.loads(invoke("pipelines", "stats", "-c", path, "--by", "workflow",
                              "--json").output)
    assert stats[0]["workflow"] == "count-files" and stats[0]["finished"] == 1
    history = invoke("history", "alice/stack1", "-c", path)
    assert history.exit_code == 0
    assert "transferred" in history.output and "count-files 3" in history.output
    assert invoke("history", "nobody/nothing", "-c", path).exit_code == 2


def test_a_new_workflow_over_everything_delivered_once(facility):
    path, config, journal = facility
    for name in ("d1", "d2"):
        delivered_dataset(config, journal, name, {"x.tif": b"1"})
    first = invoke("pipelines", "run", "count-files", "--all-delivered", "-c", path)
    assert first.exit_code == 0, first.output
    assert "2 run(s) of count-files recorded; 0 dataset(s) already had one" in first.output
    again = invoke("pipelines", "run", "count-files", "--all-delivered", "-c", path,
                   "--since", "2000-01-01", "--no-wait")
    assert "0 run(s) of count-files recorded; 2 dataset(s) already had one" in again.output
    rerun = invoke("pipelines", "rerun", "1", "-c", path)
    assert rerun.exit_code == 0 and "run 3: rerun of 1" in rerun.output


def test_cancel_rules_list_and_bad_input(facility, tmp_path):
    path, config, journal = facility
    row = delivered_dataset(config, journal, "stack1", {"a.tif": b"1"})
    assert invoke("pipelines", "run", "count-files", row.dest_path, "-c", path,
                  "--no-wait").exit_code == 0
    assert "run 1 cancelled" in invoke("pipelines", "cancel", "1", "-c", path).output
    again = invoke("pipelines", "cancel", "1", "-c", path)
    assert again.exit_code == 2 and "is not waiting or running" in again.output
    rules = invoke("pipelines", "rules", row.dest_path, "-c", path).output
    assert "rule 1 (count-files): runs" in rules
    assert "rule 2 (plate-qc): does not run: not a plate" in rules
    listed = invoke("pipelines", "list", "-c", path).output
    assert "count-files" in listed and "plate-qc" in listed and "previews" in listed
    missing = invoke("pipelines", "run", "previews", tmp_path / "nope", "-c", path)
    assert missing.exit_code == 2 and "does not exist" in missing.output
    unknown = invoke("pipelines", "run", "nope", row.dest_path, "-c", path)
    assert unknown.exit_code == 2 and "no workflow called 'nope' is installed" in unknown.output
    assert invoke("pipelines", "log", "-c", path, "--status", "done").exit_code == 2
    assert "2026-13-01" in invoke("pipelines", "log", "-c", path, "--since",
                                  "2026-13-01").output
