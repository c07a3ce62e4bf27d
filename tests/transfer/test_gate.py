"""The resource gate: decisions, time windows, pausing mid-file, suspension, bandwidth, stalls."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from autotx_lib.cli import app
from autotx_lib.config import GateSettings, TimeWindow
from autotx_lib.errors import DestinationError
from autotx_lib.journal import Journal
from autotx_lib.transfer import control
from autotx_lib.transfer.agent import Agent
from autotx_lib.transfer.gate import (
    GateMonitor,
    Reading,
    normalize_process_name,
    pause_reasons,
)
from autotx_lib.transfer.status import status

from ..conftest import wait_for
from .conftest import make_dataset, tree

MONDAY_NOON = dt.datetime(2026, 11, 23, 12, 0)


def reading(**overrides) -> Reading:
    values = dict(cpu_percent=5.0, available_mb=8000.0, processes=frozenset({"bash"}),
                  destination_free_mb=50_000.0, now=MONDAY_NOON)
    values.update(overrides)
    return Reading(**values)


def test_quiet_machine_lets_transfers_run():
    assert pause_reasons(reading(), GateSettings()) == []


@pytest.mark.parametrize("overrides,settings,expected", [
    ({"cpu_percent": 40.0}, {"max_cpu_percent": 25}, "CPU 40% > 25%"),
    ({"available_mb": 100.0}, {"min_available_memory_mb": 512}, "available memory 100 MB < 512"),
    ({"processes": frozenset({"zen"})}, {"blacklisted_processes": ["ZEN.exe"]},
     "blacklisted process running: zen"),
    ({"destination_free_mb": 10.0}, {"min_free_destination_mb": 100}, "destination free space"),
    ({"now": dt.datetime(2026, 11, 23, 10, 0)}, {"time_windows": ["Mon-Fri 19:00-07:00"]},
     "outside the transfer time windows"),
    ({"suspension": "laser service"}, {}, "suspended by hand: laser service"),
])
def test_each_condition_pauses_with_its_reason(overrides, settings, expected):
    reasons = pause_reasons(reading(**overrides), GateSettings(**settings))
    assert len(reasons) == 1 and expected in reasons[0]


def test_process_names_compare_without_case_and_exe():
    assert normalize_process_name("ZEN.EXE") == normalize_process_name("zen") == "zen"
    assert normalize_process_name("LAS X.exe") == "las x"


@pytest.mark.parametrize("text,when,inside", [
    ("Mon-Fri 19:00-07:00", dt.datetime(2026, 11, 23, 20, 0), True),    # Monday evening
    ("Mon-Fri 19:00-07:00", dt.datetime(2026, 11, 28, 6, 59), True),    # Saturday, Friday's night
    ("Mon-Fri 19:00-07:00", dt.datetime(2026, 11, 29, 6, 0), False),    # Sunday morning
    ("Mon-Fri 19:00-07:00", dt.datetime(2026, 11, 24, 12, 0), False),   # Tuesday noon
    ("Sat-Sun 00:00-24:00", dt.datetime(2026, 11, 29, 13, 0), True),
    ("Sun-Mon 22:00-06:00", dt.datetime(2026, 11, 24, 3, 0), True),     # Tuesday 3:00, Monday's
    ("12:00-13:00", dt.datetime(2026, 11, 25, 12, 30), True),
])
def test_time_windows(text, when, inside):
    assert TimeWindow.parse(text).contains(when) is inside


@pytest.mark.parametrize("bad", ["nights", "Mon-Fri 7-19", "Xyz 10:00-11:00", "25:00-26:00"])
def test_bad_time_window_is_refused_with_the_expected_form(bad):
    with pytest.raises(ValueError, match="time window|hours go"):
        GateSettings(time_windows=[bad])


def start_agent_in_thread(config):
    progress = []
    agent = Agent(config, on_progress=progress.append)
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("summary", agent.run(once=True)))
    thread.start()
    return agent, thread, progress, result


def test_blacklisted_process_appearing_mid_file_pauses_and_resumes_mid_file(facility, tmp_path):
    facility.gate.blacklisted_processes = ["AcquireX.exe"]
    facility.gate.bandwidth_mb_s = 20  # 40 MB take about 2 s: time to start the process
    facility.gate.hysteresis_seconds = 0.5
    content = os.urandom(40_000_000)
    make_dataset(facility.incoming, "alice", "exp", {"movie.raw": content})
    fake = tmp_path / "AcquireX"
    shutil.copy("/bin/sleep", fake)

    agent, thread, progress, result = start_agent_in_thread(facility)
    wait_for(lambda: progress and progress[-1].bytes_done > 5_000_000, 30, "5 MB copied")
    acquisition = subprocess.Popen([str(fake), "30"])
    try:
        wait_for(lambda: any(e.kind == "paused" for e in agent.journal.recent_events(20)), 30,
                 "the agent to pause for the blacklisted process")
        reports, paused_at = len(progress), progress[-1].bytes_done
        # the copy loop reports about twice a second, paused or not: three more reports
        # are a second or more spent paused, counted by the agent itself
        wait_for(lambda: len(progress) >= reports + 3, 30, "three progress reports while paused")
        assert progress[-1].bytes_done - paused_at <= 8_000_000  # at most a chunk in flight
        assert progress[-1].bytes_done < len(content)
        assert "acquirex" in (status(facility).agent_detail or "")
    finally:
        acquisition.kill()
        acquisition.wait()
    thread.join(60)
    assert result["summary"].ok and result["summary"].delivered
    assert tree(facility.destination / "alice" / "exp") == {"movie.raw": content}
    file_row = Journal(facility.journal_url).files_of(result["summary"].delivered[0])[0]
    assert file_row.copies == 1, "the file was restarted instead of resumed mid-file"
    kinds = [e.kind for e in agent.journal.recent_events(50)]
    assert "resumed" in kinds


def test_manual_suspension_holds_across_restarts(facility):
    make_dataset(facility.incoming, "alice", "exp", {"a.txt": b"a"})
    control.suspend(facility, "laser alignment")
    first = Agent(facility).run(once=True)
    second = Agent(facility).run(once=True)  # a restarted agent
    for summary in (first, second):
        assert not summary.delivered and "suspended by hand: laser alignment" in summary.paused[0]
    assert "laser alignment" in status(facility).suspended
    assert control.resume(facility).reason == "laser alignment"
    assert Agent(facility).run(once=True).delivered
    assert status(facility).suspended is None


def test_suspend_and_resume_commands(facility, tmp_path):
    config = tmp_path / "autotx.toml"
    config.write_text(f'incoming = "{facility.incoming}"\nmanaged = "{facility.managed}"\n'
                      f'destination = "{facility.destination}"\n')
    runner = CliRunner()
    result = runner.invoke(app, ["suspend", "-c", str(config), "--reason", "service visit"])
    assert result.exit_code == 0 and "suspended: service visit" in result.output
    result = runner.invoke(app, ["status", "-c", str(config)])
    assert "suspended by hand" in result.output and "service visit" in result.output
    result = runner.invoke(app, ["suspend", "-c", str(config), "--reason", "  "])
    assert result.exit_code == 2 and "give a reason" in result.output
    result = runner.invoke(app, ["resume", "-c", str(config)])
    assert result.exit_code == 0 and "was suspended: service visit" in result.output


def test_bandwidth_cap_can_change_while_running(facility):
    facility.gate.bandwidth_mb_s = 4
    make_dataset(facility.incoming, "alice", "exp", {"a.raw": os.urandom(8_000_000)})
    agent, thread, progress, result = start_agent_in_thread(facility)
    wait_for(lambda: progress and progress[-1].bytes_done > 1_000_000, 30, "1 MB copied")
    assert agent._bandwidth() == 4
    control.set_bandwidth(facility, 400)  # from another process in real life: the journal
    wait_for(lambda: agent._bandwidth() == 400, 5, "the agent to read the new cap")
    thread.join(60)
    assert result["summary"].delivered
    with pytest.raises(ValueError, match="positive number"):
        control.set_bandwidth(facility, 0)


def test_bandwidth_cap_is_a_floor_on_duration(facility):
    facility.gate.bandwidth_mb_s = 5
    make_dataset(facility.incoming, "alice", "exp", {"a.raw": os.urandom(10_000_000)})
    started = time.monotonic()
    assert Agent(facility).run(once=True).delivered
    assert time.monotonic() - started >= 1.6  # 10 MB at 5 MB/s cannot take less than ~2 s


def test_stalled_copy_is_detected_and_aborted(tmp_path):
    gate = GateMonitor(GateSettings(max_cpu_percent=100, min_available_memory_mb=0), tmp_path,
                       interval=0.05, stall_seconds=0.3).start()
    try:
        started = time.monotonic()
        gate.throttle(1000)  # then no progress: the gate's own thread must notice
        wait_for(lambda: gate.stalled, 10, "the gate to notice that no byte was copied")
        assert time.monotonic() - started >= 0.3, "a stall declared before stall_seconds"
        with pytest.raises(DestinationError, match="stalled"):
            gate.throttle(1000)
    finally:
        gate.stop()


def test_stalled_dataset_is_retried_and_then_delivered(facility, monkeypatch):
    facility.copy_.stall_seconds = 0.3
    make_dataset(facility.incoming, "alice", "exp", {"a.raw": os.urandom(3_000_000)})
    real = os.write
    calls = {"n": 0}
    monitors: list[GateMonitor] = []
    real_start = GateMonitor.start

    def recorded_start(self):
        monitors.append(self)
        return real_start(self)

    def hanging_once(*args):
        calls["n"] += 1
        if calls["n"] == 1:  # a share that stops answering until the agent gives up on it
            wait_for(lambda: monitors[-1].stalled, 30, "the gate to notice the stalled copy")
        return real(*args)

    monkeypatch.setattr(GateMonitor, "start", recorded_start)
    monkeypatch.setattr(os, "write", hanging_once)
    first = Agent(facility).run(once=True)
    assert first.retrying and not first.delivered
    row = Journal(facility.journal_url).dataset(first.retrying[0])
    assert "stalled" in row.error
    assert not (facility.destination / "alice" / "exp").exists()
    assert Agent(facility).run(once=True).delivered


def test_destination_removed_mid_transfer_and_restored(facility):
    """The share disappears during a copy: the dataset waits, nothing partial is delivered,
    and once the share is back the copy resumes without copying verified files again."""
    facility.gate.bandwidth_mb_s = 4
    facility.copy_.workers = 1
    files = {f"f{i}.raw": os.urandom(700_000) for i in range(8)}
    make_dataset(facility.incoming, "alice", "exp", files)
    offline = facility.destination.with_name("storage-offline")

    agent, thread, progress, result = start_agent_in_thread(facility)
    wait_for(lambda: progress and progress[-1].files_done >= 2, 30, "two files verified")
    os.rename(facility.destination, offline)  # the share goes away
    thread.join(60)

    summary = result["summary"]
    assert summary.retrying and not summary.delivered
    journal = Journal(facility.journal_url)
    row = journal.dataset(summary.retrying[0])
    assert row.state == "queued" and row.error
    verified = {f.relpath for f in journal.files_of(row.id) if f.verified}
    assert verified
    tmp = Path(row.tmp_path.replace(str(facility.destination), str(offline)))
    mtimes = {p: (tmp / p).stat().st_mtime_ns for p in verified}

    os.rename(offline, facility.destination)  # the share is back
    facility.gate.bandwidth_mb_s = None
    assert Agent(facility).run(once=True).delivered
    delivered = facility.destination / "alice" / "exp"
    assert tree(delivered) == files
    assert {p: (delivered / p).stat().st_mtime_ns for p in verified} == mtimes
