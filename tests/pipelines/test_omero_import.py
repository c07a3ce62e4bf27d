"""OMERO import after delivery: recording by the agent, planning, the engine, status, CLI.

No server and no omero-py are needed: the import step is injected (a fake that records
each request in a ledger file, or fails the way omero-py fails) through
``omero_import_workflow``; the real step is only run to check the error it gives without
the extra. The runs go through the pipeline engine on a real (in-process) dask cluster.
"""

from __future__ import annotations

import importlib.util
import json
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from autotx_lib.cli import app
from autotx_lib.config import config_from_dict, load_config
from autotx_lib.errors import ConfigError
from autotx_lib.imaging import omero as om
from autotx_lib.journal import Journal
from autotx_lib.journal.pipeline_runs import PipelineStore
from autotx_lib.pipelines import log as runlog
from autotx_lib.pipelines import pipeline_hooks
from autotx_lib.pipelines.engine import PipelineEngine
from autotx_lib.pipelines.omero_import import (
    KIND,
    DeliveredDataMissingError,
    adopt_legacy_jobs,
    omero_after_delivery,
    omero_import_step,
    plan_import,
)
from autotx_lib.pipelines.registry import registry_for
from autotx_lib.pipelines.workflows.omero_import import omero_import_workflow
from autotx_lib.transfer.agent import Agent

from ..conftest import wait_for
from .conftest import make_dataset, write_config

cli = CliRunner()
HAS_OMERO = importlib.util.find_spec("omero") is not None
PLATE = "SPW&plates=1&plateRows=2&plateCols=3&fields=1.fake"


class FakeImport:
    """Records requests in a ledger file; imports nothing twice (as import_files does).

    A file, because the step is pickled to the dask worker: its memory is not the test's.
    """

    def __init__(self, ledger: Path) -> None:
        self.ledger = ledger

    def __call__(self, request) -> dict:
        seen = self.requests()
        key = [request.provenance["autotx.dataset"], request.provenance["autotx.manifest_digest"]]
        ids = [] if any(r["key"] == key for r in seen) else [100 + len(seen)]
        with self.ledger.open("a") as ledger:
            ledger.write(json.dumps({"key": key, "dataset": request.dataset,
                                     "paths": list(request.paths), "kind": request.target.kind,
                                     "names": list(request.target.names),
                                     "is_plate": request.is_plate,
                                     "transfer": request.transfer}) + "\n")
        return {"target": str(request.target), "ids": ids, "already_imported": not ids}

    def requests(self) -> list[dict]:
        if not self.ledger.exists():
            return []
        return [json.loads(line) for line in self.ledger.read_text().splitlines()]


def omero_fails(request):
    raise om.OmeroImportError("omero import exited with status 2", exit_code=2)


def engine_with(config, journal, client, step) -> PipelineEngine:
    return PipelineEngine(config, journal, client=client,
                          registry=registry_for(config, {KIND: omero_import_workflow(step)}))


def deliver(config, datasets: dict[str, dict[str, bytes]], hooks=None):
    for name, files in datasets.items():
        make_dataset(config.incoming, "alice", name, files)
    journal = Journal(config.journal_url)
    hooks = pipeline_hooks(config, journal, start_runner=False) if hooks is None else hooks
    summary = Agent(config, journal=journal, after_delivery=hooks).run(once=True)
    return journal, summary


def import_runs(journal, status=None):
    return runlog.runs(journal, workflow=KIND, status=status, order="id")


def test_the_agent_records_one_import_run_per_delivered_dataset(omero_facility):
    journal, summary = deliver(omero_facility, {"run1": {"a.tif": b"x" * 100},
                                                "plate": {PLATE: b""}})
    assert len(summary.delivered) == 2
    queued = import_runs(journal, "created")
    assert len(queued) == 2
    first = PipelineStore(journal).run(int(queued["id"].iloc[0]))
    assert first.max_attempts == omero_facility.omero.max_attempts and first.user == "alice"
    payload = json.loads(first.params)["payload"]
    row = journal.dataset(first.dataset_id)
    assert payload["dest_path"] == row.dest_path == first.dataset_path
    assert payload["instrument"] == "scope-1"
    prov = payload["provenance"]
    assert prov["autotx.dataset"] == f"alice/{row.name}"
    assert prov["autotx.manifest_digest"] == row.manifest_digest
    assert prov["autotx.checksum_algorithm"] == row.algorithm
    assert any("OMERO import queued (run" in e.message for e in journal.recent_events(20))
    # recording again (a hook called twice) does not add a run
    omero_after_delivery(omero_facility, journal)(row)
    assert len(import_runs(journal)) == 2
    assert journal.recent_jobs() == []  # the old jobs table is not used any more


def test_nothing_is_recorded_when_disabled(omero_facility):
    config = omero_facility.model_copy(update={"omero": omero_facility.omero.model_copy(
        update={"enabled": False})})
    assert pipeline_hooks(config) == []
    journal, _ = deliver(config, {"run1": {"a.tif": b"x"}},
                         hooks=[omero_after_delivery(config)])
    assert import_runs(journal).empty


def test_a_broken_journal_never_breaks_delivery(omero_facility, tmp_path):
    class BrokenJournal:
        def __getattr__(self, name):
            raise RuntimeError("database is locked")

    hook = omero_after_delivery(omero_facility, BrokenJournal())  # type: ignore[arg-type]
    journal, summary = deliver(omero_facility, {"run1": {"a.tif": b"x"}}, hooks=[hook])
    assert len(summary.delivered) == 1
    assert not any(e.kind == "hook-failed" for e in journal.recent_events(20))


def test_engine_imports_with_the_target_rule_and_never_twice(omero_facility, dask_client,
                                                              tmp_path):
    journal, _ = deliver(omero_facility, {"run1": {"a.tif": b"x" * 10, "sub/b.tif": b"y"},
                                          "plate": {PLATE: b""}})
    fake = FakeImport(tmp_path / "ledger.jsonl")
    engine = engine_with(omero_facility, journal, dask_client, fake)
    tally = engine.run_until_idle(timeout_s=60)
    assert (tally.finished, tally.failed) == (2, 0)
    by_name = {r["dataset"].split("/")[1]: r for r in fake.requests()}
    run1 = by_name["run1"]
    assert (run1["kind"], run1["names"]) == ("Project/Dataset", ["alice", "run1"])
    assert not run1["is_plate"] and run1["transfer"] == "upload"
    assert run1["paths"] == [str(omero_facility.destination / "alice" / "run1")]
    plate = by_name["plate"]
    assert plate["is_plate"] and (plate["kind"], plate["names"]) == ("Screen", ["alice"])
    finished = import_runs(journal, "finished")
    details = [runlog.run_detail(journal, int(i)) for i in finished["id"]]
    assert all(d["results"]["ids"] for d in details)
    assert [s for s in details[0]["steps"]["name"]] == ["plan", "import"]

    # the same dataset imported again (a rerun by hand) is not imported a second time
    result = cli.invoke(app, ["jobs", "retry", str(details[0]["id"]), "-c",
                              str(write_config(omero_facility, tmp_path / "autotx.toml"))])
    assert result.exit_code == 0, result.output
    assert engine.run_until_idle(timeout_s=60).finished == 1
    again = runlog.run_detail(journal, int(import_runs(journal)["id"].max()))
    assert again["results"]["already_imported"] is True and again["results"]["ids"] == []
    engine.stop()


def test_a_failing_import_is_retried_with_the_omero_backoff_and_shown(omero_facility,
                                                                      dask_client, tmp_path):
    config_file = write_config(omero_facility, tmp_path / "autotx.toml")
    journal, _ = deliver(omero_facility, {"run1": {"a.tif": b"x"}})
    engine = engine_with(omero_facility, journal, dask_client, omero_fails)
    tally = engine.run_until_idle(timeout_s=60)
    engine.stop()
    assert tally.failed == 1 and "exited with status 2" in tally.errors[0]
    run = PipelineStore(journal).run(int(import_runs(journal)["id"].iloc[0]))
    assert (run.status, run.attempts) == ("error", 1)
    assert "exited with status 2" in run.error
    # the [omero] section's first retry delay (45 s), not [pipelines]' (60 s)
    wait = (runlog.aware(run.next_attempt_at) - runlog.aware(run.finished_at)).total_seconds()
    assert 40 <= wait <= 50

    result = cli.invoke(app, ["jobs", "-c", str(config_file)])
    assert result.exit_code == 0, result.output
    assert "OMERO imports" in result.output and "alice/run1" in result.output
    flat = "".join(result.output.split())  # the table wraps long notes
    assert "retryat" in flat and "status2" in flat
    result = cli.invoke(app, ["jobs", "-c", str(config_file), "--json"])
    assert json.loads(result.stdout)[0]["attempts"] == 1

    result = cli.invoke(app, ["jobs", "cancel", str(run.id), "-c", str(config_file)])
    assert result.exit_code == 0 and PipelineStore(journal).run(run.id).status == "cancelled"
    result = cli.invoke(app, ["jobs", "cancel", str(run.id), "-c", str(config_file)])
    assert result.exit_code == 2 and "already ended" in result.output
    result = cli.invoke(app, ["jobs", "retry", str(run.id), "-c", str(config_file)])
    assert result.exit_code == 0 and f"(retry of {run.id}) is due now" in result.output
    assert list(import_runs(journal, "created")["rerun_of"]) == [run.id]


def test_jobs_run_once_with_the_real_step_reports_why_it_failed(omero_facility, tmp_path,
                                                               dask_client):
    config_file = write_config(omero_facility, tmp_path / "autotx.toml",
                               f'[pipelines]\nscheduler = "{dask_client.scheduler.address}"\n')
    journal, _ = deliver(omero_facility, {"run1": {"a.tif": b"x"}})
    result = cli.invoke(app, ["jobs", "run", "--once", "-c", str(config_file)])
    assert result.exit_code == 1, result.output
    assert "0 finished, 1 failed" in result.output
    run = PipelineStore(journal).run(int(import_runs(journal)["id"].iloc[0]))
    if HAS_OMERO:  # no password in the environment
        assert "no password" in run.error
    else:
        assert "tools/setup_omero.py" in run.error and run.next_attempt_at is None


@pytest.mark.skipif(HAS_OMERO, reason="omero-py is installed; this checks the error without it")
def test_the_real_step_without_the_extra_is_a_permanent_error(omero_facility, tmp_path):
    (tmp_path / "d").mkdir()
    request = plan_import({"dest_path": str(tmp_path / "d"), "user": "alice", "name": "d",
                           "provenance": {"autotx.manifest_digest": "x"}}, omero_facility.omero)
    with pytest.raises(ImportError, match="setup_omero"):
        omero_import_step(request)


def test_plan_import_refuses_bad_payloads(omero_facility, tmp_path):
    settings = omero_facility.omero
    with pytest.raises(Exception, match="manifest digest") as info:
        plan_import({"dest_path": str(tmp_path)}, settings, 7)
    assert info.value.retryable is False and "run 7" in str(info.value)
    with pytest.raises(DeliveredDataMissingError, match="mounted") as info:
        plan_import({"dest_path": str(tmp_path / "gone"),
                     "provenance": {"autotx.manifest_digest": "x"}}, settings)
    assert info.value.retryable is True


def test_a_slow_import_does_not_hold_up_transfers(omero_facility, dask_client, tmp_path):
    """The agent only records; the engine thread imports while the agent keeps copying."""
    journal = Journal(omero_facility.journal_url)
    release = tmp_path / "release"
    engine = engine_with(omero_facility, journal, dask_client, SlowImport(release))
    engine.start(poll_seconds=0.05)
    try:
        make_dataset(omero_facility.incoming, "alice", "first", {"a.tif": b"1"})
        hooks = pipeline_hooks(omero_facility, journal, start_runner=False)
        Agent(omero_facility, journal=journal, after_delivery=hooks).run(once=True)
        wait_for(lambda: not import_runs(journal, "started").empty, 10, "the import to start")
        make_dataset(omero_facility.incoming, "alice", "second", {"b.tif": b"2"})
        summary = Agent(omero_facility, journal=journal, after_delivery=hooks).run(once=True)
        assert len(summary.delivered) == 1
        assert not import_runs(journal, "started").empty, "the delivery waited for the import"
    finally:
        release.write_text("go")
        wait_for(lambda: len(import_runs(journal, "finished")) == 2, 30, "both imports")
        engine.stop(timeout=10)


class SlowImport:
    """An import that lasts until the test writes its release file."""

    def __init__(self, release: Path) -> None:
        self.release = release

    def __call__(self, request) -> dict:
        done = threading.Event()
        while not self.release.exists():
            done.wait(0.02)
        return {"ids": [1]}


def test_old_import_jobs_are_moved_onto_the_engine_once(omero_facility, tmp_path):
    journal, _ = deliver(omero_facility, {"run1": {"a.tif": b"x"}},
                         hooks=[])  # delivered before the upgrade: no run recorded
    row = journal.datasets_in(["done", "delivered"])[0]
    from autotx_lib.pipelines.omero_import import omero_payload

    waiting = journal.add_job(KIND, row.id, omero_payload(omero_facility, row))
    gave_up = journal.add_job(KIND, row.id, omero_payload(omero_facility, row))
    journal.update_job(gave_up, state="error", error="gave up")
    run_ids = adopt_legacy_jobs(omero_facility, journal)
    assert len(run_ids) == 1
    run = PipelineStore(journal).run(run_ids[0])
    assert (run.workflow, run.dataset_id, run.status) == (KIND, row.id, "created")
    assert json.loads(run.params)["payload"]["dest_path"] == row.dest_path
    jobs = {j.id: j for j in journal.recent_jobs()}
    assert jobs[waiting].state == "cancelled"
    assert jobs[waiting].error == f"moved to pipeline run {run_ids[0]}"
    assert jobs[gave_up].state == "error"  # history stays as it was
    assert adopt_legacy_jobs(omero_facility, journal) == []  # nothing twice
    # the agent's hooks do it at start; the dataset's own run is the same run
    pipeline_hooks(omero_facility, journal, start_runner=False)[0](row)
    assert len(import_runs(journal)) == 1


def test_jobs_run_refuses_when_nothing_is_enabled(omero_facility, tmp_path):
    config_file = write_config(omero_facility, tmp_path / "autotx.toml")
    config_file.write_text(config_file.read_text().replace("enabled = true", "enabled = false"))
    result = cli.invoke(app, ["jobs", "run", "--once", "-c", str(config_file)])
    assert result.exit_code == 2 and "nothing to run" in result.output
    result = cli.invoke(app, ["jobs"])
    assert result.exit_code == 2


# --- the [omero] section -----------------------------------------------------------------


BASE = {"incoming": "/tmp/autotx-x/in", "managed": "/tmp/autotx-x/managed",
        "destination": "/tmp"}


def test_omero_config_defaults_and_toml(omero_facility, tmp_path):
    config = config_from_dict(BASE)
    assert config.omero.enabled is False and config.omero.target == "auto"
    loaded = load_config(write_config(omero_facility, tmp_path / "a.toml",
                                      'target = "screen"\nscreen = "{instrument} {date}"\n'
                                      'transfer = "ln_s"\npassword_file = "/etc/omero-pw"\n'))
    assert loaded.omero.enabled and loaded.omero.target == "screen"
    assert loaded.omero.transfer == "ln_s" and str(loaded.omero.password_file) == "/etc/omero-pw"


@pytest.mark.parametrize("omero, key", [
    ({"enabled": True, "user": "u"}, "omero"),                   # no host
    ({"enabled": True, "host": "h"}, "omero"),                   # no user
    ({"password": "plain"}, "omero"),                            # never in the config
    ({"project": "{nobody}"}, "omero.project"),
    ({"dataset": ""}, "omero.dataset"),
    ({"target": "plate"}, "omero.target"),
    ({"transfer": "copy"}, "omero.transfer"),
    ({"port": 0}, "omero.port"),
    ({"max_attempts": 0}, "omero.max_attempts"),
])
def test_omero_config_validation(omero, key, monkeypatch):
    monkeypatch.delenv("OMERO_HOST", raising=False)
    monkeypatch.delenv("OMERO_USER", raising=False)
    with pytest.raises(ConfigError) as info:
        config_from_dict(dict(BASE, omero=omero))
    assert any(p.key == key for p in info.value.problems), info.value.problems


def test_a_plain_password_is_refused_with_the_way_to_give_it(monkeypatch):
    with pytest.raises(ConfigError, match="password_env") as info:
        config_from_dict(dict(BASE, omero={"password": "hunter2"}))
    assert "hunter2" not in str(info.value)


def test_connection_settings_from_the_config_section(omero_facility, tmp_path):
    settings = omero_facility.omero
    s = om.resolve_connection(settings=settings, environ={"OMERO_PASSWORD": "pw"})
    assert (s.host, s.port, s.user, s.password) == ("127.0.0.1", settings.port, "importer", "pw")
    secret = tmp_path / "omero-pw"
    secret.write_text("from-file\n")
    with_file = settings.model_copy(update={"password_env": None, "password_file": secret})
    assert om.resolve_connection(settings=with_file, environ={}).password == "from-file"
    with pytest.raises(om.OmeroSettingsError, match="no password"):
        om.resolve_connection(settings=settings, environ={})


def test_run_in_agent_starts_one_engine_thread_per_journal(omero_facility):
    from autotx_lib import pipelines

    config = omero_facility.model_copy(update={"omero": omero_facility.omero.model_copy(
        update={"run_in_agent": True})})
    hooks = pipeline_hooks(config)
    try:
        assert len(hooks) == 1
        engine = pipelines._engines[config.journal_url]
        assert engine._thread.is_alive() and engine._thread.daemon
        pipeline_hooks(config)
        assert pipelines._engines[config.journal_url] is engine  # not a second one
    finally:
        engine = pipelines._engines.pop(config.journal_url)
        engine.stop(timeout=5)
    assert not engine._thread.is_alive()
