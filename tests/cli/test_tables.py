"""Tables stay readable at 80 columns: no line wider, no value cut down to "…"."""

from __future__ import annotations

import datetime as dt
import json

from typer.testing import CliRunner

from autotx_lib.cli import app
from autotx_lib.journal import Journal
from autotx_lib.transfer.agent import Agent

from .conftest import make_dataset, write_config

runner = CliRunner()
LONG = "2026-11-30_HeLa_DAPI_63x_oil_zstack_with_a_long_name"


def _assert_readable(text: str) -> None:
    # Plain lines (a path to copy) are soft-wrapped by the terminal; the table is not.
    rows = [line for line in text.splitlines() if set(line) & set("│┃━─")]
    assert rows and max(len(row) for row in rows) <= 80, text
    assert "…" not in text, text  # folded onto more lines, never cut


def _column(text: str, index: int) -> str:
    """The body cells of the index-th column joined: a folded value reads whole again."""
    rows = [line.split("│") for line in text.splitlines() if line.startswith("│")]
    return "".join(cells[index + 1].strip() for cells in rows)


def test_grace_table_at_80_columns(facility, tmp_path):
    config = write_config(facility, tmp_path / "autotx.toml")
    make_dataset(facility.incoming, "alice", LONG, {"a.bin": b"x" * 5000})
    Agent(facility).run(once=True)

    result = runner.invoke(app, ["grace", "-c", str(config)], env={"COLUMNS": "80"})

    assert result.exit_code == 0, result.output
    _assert_readable(result.stdout)
    assert _column(result.stdout, 1) == LONG
    assert _column(result.stdout, 6) == f"alice/{LONG}"
    assert f"relative to {facility.destination}" in result.stdout
    assert "5.0 kB" in result.stdout


def test_jobs_table_and_json_at_80_columns(facility, tmp_path):
    from autotx_lib.journal.pipeline_runs import PipelineStore

    config = write_config(facility, tmp_path / "autotx.toml")
    journal = Journal(facility.journal_url)
    store = PipelineStore(journal)
    run_ids = [store.add_run(workflow="omero-import", version="1", initiator="scope-1",
                             dataset_path=f"/mnt/storage/alice/{LONG}{i}", user="alice")[0]
               for i in range(3)]
    journal.close()

    result = runner.invoke(app, ["jobs", "-c", str(config)], env={"COLUMNS": "80"})

    assert result.exit_code == 0, result.output
    _assert_readable(result.stdout)
    assert all(f" {i} " in result.stdout for i in run_ids)
    zone = dt.datetime.now().astimezone().strftime("%Z")
    datasets = "".join(line.split("│")[1].strip() for line in result.stdout.splitlines()
                       if "│" in line)  # folded cells read whole again
    assert datasets == "".join(f"alice/{LONG}{i}" for i in (2, 1, 0))
    assert result.stdout.count(f" {zone}") == 3
    as_json = runner.invoke(app, ["jobs", "-c", str(config), "--json"])
    created = json.loads(as_json.stdout)[0]["created_at"]
    assert created.endswith("+00:00") or created.endswith("Z"), created  # with its zone


def test_grace_json_time_has_its_zone(facility, tmp_path):
    config = write_config(facility, tmp_path / "autotx.toml")
    result = runner.invoke(app, ["grace", "-c", str(config), "--json"])
    generated = json.loads(result.stdout)["generated_at"]
    assert generated[-6] in "+-" and generated[-3] == ":", generated
