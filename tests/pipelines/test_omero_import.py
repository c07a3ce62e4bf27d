"""OMERO import after delivery: queueing by the agent, planning, the runner, status, CLI.

No server and no omero-py are needed: the import step is injected (a fake that records
the request, or fails the way omero-py fails); the real step is only run to check the
error it gives without the extra.
"""

from __future__ import annotations

import importlib.util
import json
import threading

import pytest
from typer.testing import CliRunner

from autotx_lib.cli import app
from autotx_lib.config import config_from_dict, load_config
from autotx_lib.errors import ConfigError
from autotx_lib.imaging import omero as om
from autotx_lib.journal import Journal
from autotx_lib.pipelines import job_runner, pipeline_hooks
from autotx_lib.pipelines.jobs import Job
from autotx_lib.pipelines.omero_import import (
    KIND,
    DeliveredDataMissingError,
    ImportRequest,
    omero_after_delivery,
    omero_import_step,
    omero_runner,
    plan_import,
)
from autotx_lib.transfer.agent import Agent
from autotx_lib.transfer.status import status

from ..conftest import wait_for
from .conftest import make_dataset, write_config

cli = CliRunner()
HAS_OMERO = importlib.util.find_spec("omero") is not None
PLATE = "SPW&plates=1&plateRows=2&plateCols=3&fields=1.fake"


class FakeImport:
    """Records requests; imports nothing twice (as import_files does)."""

    def __init__(self) -> None:
        self.requests: list[ImportRequest] = []
        self.seen: set[tuple[str, str]] = set()

    def __call__(self, request: ImportRequest) -> dict:
        self.requests.append(request)
        key = (request.provenance["autotx.dataset"], request.provenance["autotx.manifest_digest"])
        ids = [] if key in self.seen else [100 + len(self.requests)]
        self.seen.add(key)
        return {"target": str(request.target), "ids": ids, "already_imported": not ids}


def deliver(config, datasets: dict[str, dict[str, bytes]], hooks=None):
    for name, files in datasets.items():
        make_dataset(config.incoming, "alice", name, files)
    journal = Journal(config.journal_url)
    hooks = pipeline_hooks(config, journal, start_runner=False) if hooks is None else hooks
    summary = Agent(config, journal=journal, after_delivery=hooks).run(once=True)
    return journal, summary


def test_the_agent_queues_one_import_per_delivered_dataset(omero_facility):
    journal, summary = deliver(omero_facility, {"run1": {"a.tif": b"x" * 100},
                                                "plate": {PLATE: b""}})
    assert len(summary.delivered) == 2
    queued = journal.jobs_in(["created"], KIND)
    assert len(queued) == 2
    payload = json.loads(queued[0].payload)
    row = journal.dataset(queued[0].dataset_id)
    assert payload["dest_path"] == row.dest_path and payload["instrument"] == "scope-1"
    prov = payload["provenance"]
    assert prov["autotx.dataset"] == f"alice/{row.name}"
    assert prov["autotx.manifest_digest"] == row.manifest_digest
    assert prov["autotx.checksum_algorithm"] == row.algorithm
    # queueing again (a hook called twice) does not add a job
    omero_after_delivery(omero_facility, journal)(row)
    assert len(journal.jobs_in(["created"], KIND)) == 2


def test_nothing_is_queued_when_disabled(omero_facility):
    config = omero_facility.model_copy(update={"omero": omero_facility.omero.model_copy(
        update={"enabled": False})})
    assert pipeline_hooks(config) == []
    journal, _ = deliver(config, {"run1": {"a.tif": b"x"}},
                         hooks=[omero_after_delivery(config)])
    assert journal.recent_jobs() == []


def test_a_broken_journal_never_breaks_delivery(omero_facility, tmp_path):
    class BrokenJournal:
        def jobs_in(self, *args, **kwargs):
            raise RuntimeError("database is locked")

    hook = omero_after_delivery(omero_facility, BrokenJournal())  # type: ignore[arg-type]
    journal, summary = deliver(omero_facility, {"run1": {"a.tif": b"x"}}, hooks=[hook])
    assert len(summary.delivered) == 1
    assert not any(e.kind == "hook-failed" for e in journal.recent_events(20))


def test_runner_imports_with_the_target_rule_and_never_twice(omero_facility):
    journal, _ = deliver(omero_facility, {"run1": {"a.tif": b"x" * 10, "sub/b.tif": b"y"},
                                          "plate": {PLATE: b""}})
    fake = FakeImport()
    outcomes = omero_runner(omero_facility, journal, import_step=fake).run_once()
    assert [o.state for o in outcomes] == ["finished", "finished"]
    by_name = {r.dataset.split("/")[1]: r for r in fake.requests}
    run1 = by_name["run1"]
    assert run1.target == om.ContainerSpec("Project/Dataset", ("alice", "run1"))
    assert not run1.is_plate and run1.transfer == "upload"
    assert run1.paths == (str(omero_facility.destination / "alice" / "run1"),)
    plate = by_name["plate"]
    assert plate.is_plate and plate.target == om.ContainerSpec("Screen", ("alice",))
    results = [json.loads(r.result) for r in journal.jobs_in(["finished"])]
    assert all(r["ids"] for r in results)

    # the same dataset queued again (e.g. by hand) is not imported a second time
    row = journal.dataset(journal.jobs_in(["finished"])[0].dataset_id)
    job_id = journal.add_job(KIND, row.id, json.loads(journal.jobs_in(["finished"])[0].payload))
    omero_runner(omero_facility, journal, import_step=fake).run_once()
    again = [r for r in journal.jobs_in(["finished"]) if r.id == job_id][0]
    assert json.loads(again.result)["already_imported"] is True


def test_a_failing_import_is_retried_and_shown_by_status_and_cli(omero_facility, tmp_path):
    config_file = write_config(omero_facility, tmp_path / "autotx.toml")
    journal, _ = deliver(omero_facility, {"run1": {"a.tif": b"x"}})

    def omero_cli_fails(request):
        raise om.OmeroImportError("omero import exited with status 2", exit_code=2)

    outcome, = omero_runner(omero_facility, journal, import_step=omero_cli_fails).run_once()
    assert outcome.state == "error" and outcome.retry_at is not None

    snapshot = status(omero_facility)
    job, = snapshot.jobs
    assert (job.kind, job.state, job.attempts) == (KIND, "error", 1)
    assert "exited with status 2" in job.error and job.next_attempt_at is not None
    assert json.loads(json.dumps(snapshot.to_dict()))["jobs"][0]["state"] == "error"

    result = cli.invoke(app, ["status", "-c", str(config_file)])
    assert result.exit_code == 0, result.output
    assert "after delivery" in result.output and "omero-import" in result.output

    result = cli.invoke(app, ["jobs", "-c", str(config_file)])
    assert result.exit_code == 0, result.output
    assert "omero-import" in result.output
    flat = "".join(result.output.split())  # the table wraps long notes
    assert "retryat" in flat and "status2" in flat
    result = cli.invoke(app, ["jobs", "-c", str(config_file), "--json"])
    assert json.loads(result.stdout)[0]["attempts"] == 1

    result = cli.invoke(app, ["jobs", "cancel", str(job.id), "-c", str(config_file)])
    assert result.exit_code == 0 and journal.recent_jobs()[0].state == "cancelled"
    result = cli.invoke(app, ["jobs", "cancel", str(job.id), "-c", str(config_file)])
    assert result.exit_code == 2
    result = cli.invoke(app, ["jobs", "retry", str(job.id), "-c", str(config_file)])
    assert result.exit_code == 0 and journal.recent_jobs()[0].state == "error"


def test_jobs_run_once_with_the_real_step_reports_why_it_failed(omero_facility, tmp_path):
    config_file = write_config(omero_facility, tmp_path / "autotx.toml")
    journal, _ = deliver(omero_facility, {"run1": {"a.tif": b"x"}})
    result = cli.invoke(app, ["jobs", "run", "--once", "-c", str(config_file)])
    assert result.exit_code == 1, result.output
    assert "0 finished, 1 failed" in result.output
    error = journal.recent_jobs()[0].error
    if HAS_OMERO:  # no password in the environment
        assert "no password" in error
    else:
        assert "tools/setup_omero.py" in error and journal.recent_jobs()[0].next_attempt_at is None


@pytest.mark.skipif(HAS_OMERO, reason="omero-py is installed; this checks the error without it")
def test_the_real_step_without_the_extra_is_a_permanent_error(omero_facility, tmp_path):
    (tmp_path / "d").mkdir()
    job = Job(1, KIND, None, {"dest_path": str(tmp_path / "d"), "user": "alice", "name": "d",
                              "provenance": {"autotx.manifest_digest": "x"}}, 1)
    request = plan_import(job, omero_facility.omero)
    with pytest.raises(ImportError, match="setup_omero"):
        omero_import_step(request)


def test_plan_import_refuses_bad_jobs(omero_facility, tmp_path):
    settings = omero_facility.omero
    with pytest.raises(Exception, match="manifest digest") as info:
        plan_import(Job(1, KIND, None, {"dest_path": str(tmp_path)}, 1), settings)
    assert info.value.retryable is False
    with pytest.raises(DeliveredDataMissingError, match="mounted") as info:
        plan_import(Job(1, KIND, None, {"dest_path": str(tmp_path / "gone"),
                                        "provenance": {"autotx.manifest_digest": "x"}}, 1),
                    settings)
    assert info.value.retryable is True


def test_a_slow_import_does_not_hold_up_transfers(omero_facility):
    """The agent only queues; the runner thread imports while the agent keeps copying."""
    journal = Journal(omero_facility.journal_url)
    release = threading.Event()

    def slow(request):  # an import that lasts until the test has seen the second delivery
        release.wait(30)
        return {"ids": [1]}

    runner = omero_runner(omero_facility, journal, import_step=slow)
    runner.start(poll_seconds=0.05)
    try:
        make_dataset(omero_facility.incoming, "alice", "first", {"a.tif": b"1"})
        hooks = pipeline_hooks(omero_facility, journal, start_runner=False)
        Agent(omero_facility, journal=journal, after_delivery=hooks).run(once=True)
        wait_for(lambda: journal.jobs_in(["started"]), 5, "the import to start")
        make_dataset(omero_facility.incoming, "alice", "second", {"b.tif": b"2"})
        summary = Agent(omero_facility, journal=journal, after_delivery=hooks).run(once=True)
        assert len(summary.delivered) == 1
        assert journal.jobs_in(["started"]), "the delivery waited for the import"
    finally:
        release.set()
        runner.stop(timeout=10)


def test_job_runner_knows_only_enabled_kinds(omero_facility):
    assert KIND in job_runner(omero_facility).handlers
    disabled = omero_facility.model_copy(update={"omero": omero_facility.omero.model_copy(
        update={"enabled": False})})
    assert job_runner(disabled).handlers == {}


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


def test_run_in_agent_starts_one_runner_thread_per_journal(omero_facility):
    from autotx_lib import pipelines

    config = omero_facility.model_copy(update={"omero": omero_facility.omero.model_copy(
        update={"run_in_agent": True})})
    hooks = pipeline_hooks(config)
    try:
        assert len(hooks) == 1
        runner = pipelines._runners[config.journal_url]
        assert runner._thread.is_alive() and runner._thread.daemon
        pipeline_hooks(config)
        assert pipelines._runners[config.journal_url] is runner  # not a second one
    finally:
        runner = pipelines._runners.pop(config.journal_url)
        runner.stop(timeout=5)
    assert not runner._thread.is_alive()
