"""TransferMonitor: shows what the journal says, and its buttons call the library."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

pytest.importorskip("ipywidgets", reason="the dashboards need ipywidgets (the viz extra)")

from autotx_lib.config import Config  # noqa: E402
from autotx_lib.dashboards import TransferMonitor  # noqa: E402
from autotx_lib.dashboards.transfer_monitor import GRACE_PLACEHOLDER  # noqa: E402
from autotx_lib.journal import Journal  # noqa: E402
from autotx_lib.transfer import control  # noqa: E402
from autotx_lib.transfer.agent import Agent  # noqa: E402

from ..conftest import wait_for  # noqa: E402


def _facility(root: Path) -> Config:
    storage = root / "storage"
    (storage / "alice").mkdir(parents=True)
    config = Config(incoming=root / "instrument" / "incoming", managed=root / "instrument" / "managed",
                    destination=storage, readiness={"quiet_seconds": 0}, host_alias="scope-7",
                    destination_alias="central storage",
                    gate={"max_cpu_percent": 100, "min_available_memory_mb": 0})
    (root / "autotx.toml").write_text(
        f'incoming = "{config.incoming}"\nmanaged = "{config.managed}"\n'
        f'destination = "{storage}"\nhost_alias = "scope-7"\n'
        '[readiness]\nquiet_seconds = 0\n'
        '[gate]\nmax_cpu_percent = 100\nmin_available_memory_mb = 0\n')
    return config


def _dataset(config: Config, user: str, name: str, files: int = 3) -> Path:
    folder = config.incoming / user / name
    folder.mkdir(parents=True)
    for i in range(files):
        (folder / f"image_{i}.tif").write_bytes(bytes([i]) * (1000 + i))
    return folder


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return _facility(tmp_path)


def test_shows_delivered_and_unmatched_results_after_an_agent_run(config):
    _dataset(config, "alice", "HeLa_zstack")
    _dataset(config, "carol", "first_test", files=1)
    summary = Agent(config).run(once=True)
    assert len(summary.delivered) == 1 and len(summary.unmatched) == 1
    monitor = TransferMonitor(config, start=False)
    assert "scope-7" in monitor.title.value and "central storage" in monitor.title.value
    results = monitor.results.value
    assert "HeLa_zstack" in results and "verified" in results
    assert "first_test" in results and "unmatched" in results
    assert "nothing queued, nothing waiting" in monitor.queue.value
    assert "no transfer under way" in monitor.current.value
    assert monitor.progress.value == 0
    assert "stopped" in monitor.state.value  # Agent.run(once=True) ended its session


def test_shows_each_destination_of_a_dataset(tmp_path):
    storage = tmp_path / "storage"
    (storage / "alice").mkdir(parents=True)
    config = Config(incoming=tmp_path / "incoming", managed=tmp_path / "managed",
                    destinations=[{"name": "storage", "url": str(storage)},
                                  {"name": "backup", "url": str(tmp_path / "not-mounted"),
                                   "required": False}],
                    readiness={"quiet_seconds": 0},
                    gate={"max_cpu_percent": 100, "min_available_memory_mb": 0})
    _dataset(config, "alice", "HeLa_zstack")
    assert len(Agent(config).run(once=True).delivered) == 1
    results = TransferMonitor(config, start=False).results.value
    assert "storage: delivered; backup: pending (optional)" in results


def test_accepts_a_config_file_path_and_a_bare_journal(config, tmp_path):
    by_path = TransferMonitor(tmp_path / "autotx.toml", start=False)
    assert by_path.config is not None and by_path.config.host_alias == "scope-7"
    by_journal = TransferMonitor(Journal(config.journal_url), start=False)
    assert by_journal.submit_button.disabled
    assert "needs the agent's configuration" in by_journal.grace.value
    with pytest.raises(TypeError, match="give a Config, a Journal or a config file path"):
        TransferMonitor(42)
    with pytest.raises(ValueError, match="interval"):
        TransferMonitor(config, interval=0)


def test_suspend_and_resume_buttons_write_the_journal(config):
    monitor = TransferMonitor(config, start=False)
    monitor.suspend_button.click()  # no reason: refused, nothing suspended
    assert "could not do it" in monitor.message.value and "give a reason" in monitor.message.value
    assert control.suspension(config) is None
    monitor.reason.value = "laser alignment until 14:00"
    monitor.suspend_button.click()
    held = control.suspension(config)
    assert held is not None and held.reason == "laser alignment until 14:00"
    assert "suspended" in monitor.state.value and "laser alignment" in monitor.state.value
    monitor.resume_button.click()
    assert control.suspension(config) is None
    assert "transfers resumed" in monitor.message.value
    assert "suspended</span>" not in monitor.state.value


def test_paused_agent_state_and_reason_are_displayed(config):
    journal = Journal(config.journal_url)
    session, _ = journal.start_session("scope-7", 4242, "test")
    journal.heartbeat(session, "paused", "CPU 93% > 25%")
    monitor = TransferMonitor(journal, start=False)
    assert "paused" in monitor.state.value and "CPU 93% &gt; 25%" in monitor.state.value


def test_submit_form_queues_a_folder_and_reports_bad_ones(config, tmp_path):
    outside = tmp_path / "instrument" / "export" / "Run_42"
    outside.mkdir(parents=True)
    (outside / "a.tif").write_bytes(b"x" * 10)
    monitor = TransferMonitor(config, start=False)
    monitor.submit_path.value = str(outside)
    monitor.submit_user.value = "alice"
    monitor.submit_button.click()
    assert "added:" in monitor.message.value
    assert (config.incoming / "alice" / "Run_42" / "a.tif").is_file()
    assert monitor.submit_path.value == ""
    for path, user, expected in [("", "alice", "give the folder"),
                                 (str(tmp_path / "missing"), "alice", "is not a folder"),
                                 (str(outside.parent), "../bob", "cannot be used")]:
        monitor.submit_path.value, monitor.submit_user.value = path, user
        monitor.submit_button.click()
        assert "could not do it" in monitor.message.value
        assert expected in monitor.message.value


def test_grace_summary_or_its_placeholder(config):
    _dataset(config, "alice", "kept_in_grace")
    Agent(config).run(once=True)
    monitor = TransferMonitor(config, start=False)
    try:
        import autotx_lib.transfer.grace  # noqa: F401
    except ImportError:
        assert GRACE_PLACEHOLDER in monitor.grace.value
    else:
        assert "Grace area" in monitor.grace.value and "1 folder(s)" in monitor.grace.value


def test_live_updates_follow_an_agent_in_another_thread_and_close_stops_them(config):
    monitor = TransferMonitor(config, interval=0.1)
    try:
        assert monitor.running
        assert "nothing transferred yet" in monitor.results.value
        _dataset(config, "alice", "arrives_later")
        agent = threading.Thread(target=lambda: Agent(config).run(once=True))
        agent.start()
        agent.join()
        wait_for(lambda: "arrives_later" in monitor.results.value, 30,
                 "the monitor to show the new dataset")
        assert "verified" in monitor.results.value
        updater = monitor._thread
    finally:
        monitor.close()
    assert not monitor.running
    assert not updater.is_alive(), "close() left the update thread running"
    frozen = monitor.updated.value
    _dataset(config, "alice", "after_close")
    Agent(config).run(once=True)  # with the update thread gone, nothing can show it
    assert monitor.updated.value == frozen and "after_close" not in monitor.results.value


def test_current_dataset_progress_rate_and_eta_come_from_the_journal(config):
    """A copy under way, as an agent in another process records it in the journal."""
    import datetime as dt

    from autotx_lib import journal as J

    journal = Journal(config.journal_url)
    started = J.utcnow() - dt.timedelta(seconds=10)
    dataset = journal.add_dataset(user="alice", name="big_timelapse", stamp="20261123-120000",
                                  state=J.COPYING, incoming_path="/x", processing_path="/y",
                                  algorithm="xxh128", total_files=40, total_bytes=4_000_000_000,
                                  started_at=started)
    journal.set_progress(dataset, copied_bytes=1_000_000_000, copied_files=10)
    journal.add_dataset(user="bob", name="Plate_3435", stamp="20261123-120100", state=J.QUEUED,
                        incoming_path="/a", processing_path="/b", algorithm="xxh128",
                        total_files=96, total_bytes=2_000_000)
    monitor = TransferMonitor(journal, start=False)
    text = monitor.current.value
    assert "alice/big_timelapse" in text
    assert "1.0 GB of 4.0 GB" in text and "10 of 40 files" in text
    assert "MB/s" in text and "ETA" in text and "ETA unknown" not in text
    assert monitor.progress.value == pytest.approx(25.0)
    assert "Plate_3435" in monitor.queue.value and "96" in monitor.queue.value


def test_post_delivery_jobs_are_listed_with_their_state(config):
    _dataset(config, "alice", "run1")
    summary = Agent(config).run(once=True)
    journal = Journal(config.journal_url)
    ok = journal.add_job("omero-import", summary.delivered[0], {})
    journal.update_job(ok, state="finished", duration_s=12.5)
    failed = journal.add_job("omero-import", summary.delivered[0], {})
    journal.update_job(failed, state="error", attempts=3, error="connection refused")
    monitor = TransferMonitor(config, start=False)
    assert "omero-import" in monitor.jobs.value and "alice/run1" in monitor.jobs.value
    assert "finished" in monitor.jobs.value and "12.5 s" in monitor.jobs.value
    assert "connection refused" in monitor.jobs.value


def test_pipeline_runs_after_delivery_are_listed(config):
    from autotx_lib.journal.pipeline_runs import PipelineStore

    _dataset(config, "alice", "plate7")
    summary = Agent(config).run(once=True)
    row = Journal(config.journal_url).dataset(summary.delivered[0])
    store = PipelineStore(Journal(config.journal_url))
    store.add_run(workflow="omero-import", version="1", dataset_path=row.dest_path,
                  initiator="rule", dataset_id=row.id, user="alice")
    shown = TransferMonitor(config, start=False).jobs.value
    assert "omero-import" in shown and "alice/plate7" in shown and "created" in shown


def test_waiting_folders_paused_copies_requeue_and_bandwidth(config):
    """What waits in incoming/ is listed with why; a suspended copy shows no rate or ETA;
    the requeue and bandwidth controls call the library."""
    from autotx_lib import journal as J
    from autotx_lib.transfer import control

    config.readiness.marker_file = "acquisition.done"
    (config.incoming / "alice" / "half_done").mkdir(parents=True)
    (config.incoming / "alice" / "half_done" / "a.tif").write_bytes(b"a")
    (config.incoming / "nobody" / "exp").mkdir(parents=True)
    (config.incoming / "nobody" / "exp" / "acquisition.done").write_text("")
    Agent(config).run(once=True)
    monitor = TransferMonitor(config, start=False)
    assert "half_done" in monitor.queue.value and "marker file" in monitor.queue.value

    journal = Journal(config.journal_url)
    journal.add_dataset(user="alice", name="big", stamp="s", state=J.COPYING,
                        incoming_path="/x", processing_path="/y", algorithm="xxh3_128",
                        total_files=4, total_bytes=4_000_000, started_at=J.utcnow())
    control.suspend(config, "laser service")
    monitor.refresh()
    assert "paused" in monitor.current.value and "laser service" in monitor.current.value
    assert "ETA" not in monitor.current.value and monitor.progress.bar_style == "warning"

    [unmatched] = [d for d in monitor.last_status.history if d.state == "unmatched"]
    (config.destination / "nobody").mkdir()
    monitor.requeue(unmatched.id)
    assert (config.incoming / "nobody" / "exp" / "acquisition.done").exists()
    monitor.requeue_target.value = "not-a-dataset"
    monitor.requeue_button.click()
    assert "could not do it" in monitor.message.value

    monitor.set_bandwidth("Mon-Sun 00:00,12M")
    assert control.effective_bandwidth(config) == 12.0 and "12 MB/s" in monitor.message.value
    monitor.bandwidth_value.value = "warp 9"
    monitor.bandwidth_button.click()
    assert "could not do it" in monitor.message.value
    assert control.effective_bandwidth(config) == 12.0
