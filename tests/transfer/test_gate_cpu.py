"""The gate's CPU figure: what counts as busy, real windows, no wait when a sample is recent."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil
import pytest

from autotx_lib.config import GateSettings
from autotx_lib.transfer.gate import (
    MIN_CPU_WINDOW,
    CpuMeter,
    GateMonitor,
    Sampler,
    blocking_reasons,
    busy_percent,
)

from ..conftest import wait_for

QUIET_LIMITS = {"min_available_memory_mb": 0}  # only CPU may close the gate here


def cpu_times(**seconds: float):
    """A ``psutil.cpu_times()`` value with every field 0 except those given."""
    fields = psutil.cpu_times()._fields
    return psutil.cpu_times()._replace(**{f: seconds.get(f, 0.0) for f in fields})


def test_busy_share_counts_normal_priority_work_without_the_agent():
    before = cpu_times()
    # guest time is already inside user time: it must not be counted twice
    after = cpu_times(user=1.0, system=0.5, nice=2.0, idle=0.3, iowait=0.1, steal=0.1,
                      guest=0.5)
    assert busy_percent(before, after, own_seconds=0.0) == pytest.approx(100 * 1.5 / 4.0)
    assert busy_percent(before, after, own_seconds=0.5) == pytest.approx(100 * 1.0 / 4.0)
    assert busy_percent(before, after, own_seconds=9.0) == 0.0  # never below 0


def test_a_window_without_cpu_time_gives_no_figure():
    """Two samples taken at once used to read as 100 % busy and pause a starting copy."""
    same = psutil.cpu_times()
    with pytest.raises(ValueError, match="no CPU time"):
        busy_percent(same, same, own_seconds=0.0)


def test_first_reading_of_a_new_meter_covers_a_real_window(tmp_path):
    meter = CpuMeter()
    Sampler(tmp_path, False, meter).read()
    assert meter.last_window >= MIN_CPU_WINDOW


def test_first_reading_of_a_starting_monitor_covers_a_real_window(tmp_path):
    """The monitor's reading before the copy's first byte once covered microseconds."""
    meter = CpuMeter()
    gate = GateMonitor(GateSettings(max_cpu_percent=100, **QUIET_LIMITS), tmp_path,
                       meter=meter).start()
    gate.stop()
    assert meter.last_window >= MIN_CPU_WINDOW


def meter_sample_time(meter: CpuMeter) -> float:
    """When the meter took its newest sample (time.monotonic())."""
    return meter._samples[-1].at


def no_waiting(monkeypatch) -> list[float]:
    """Record every sleep of the gate module instead of sleeping (none is expected)."""
    from autotx_lib.transfer import gate

    slept: list[float] = []
    monkeypatch.setattr(gate.time, "sleep", slept.append)
    return slept


def test_a_check_soon_after_a_reading_does_not_wait(tmp_path, monkeypatch):
    meter = CpuMeter()
    meter.busy_percent()  # e.g. the check before a dataset; the copy's monitor follows
    while time.monotonic() - meter_sample_time(meter) < MIN_CPU_WINDOW:
        time.sleep(0.01)  # the sample must be old enough to cover a real window
    slept = no_waiting(monkeypatch)
    assert blocking_reasons(GateSettings(max_cpu_percent=100, **QUIET_LIMITS), tmp_path,
                            meter=meter) == []
    assert slept == [] and meter.last_window >= MIN_CPU_WINDOW


def test_a_check_a_while_after_priming_does_not_wait(tmp_path, monkeypatch):
    """The agent primes the meter when a pass starts; its gate check follows the scan."""
    meter = CpuMeter()
    meter.prime()
    while time.monotonic() - meter_sample_time(meter) < MIN_CPU_WINDOW:
        time.sleep(0.01)  # stands for the scan of incoming/ (time passing is the point)
    slept = no_waiting(monkeypatch)
    assert blocking_reasons(GateSettings(max_cpu_percent=100, **QUIET_LIMITS), tmp_path,
                            meter=meter) == []
    assert slept == [] and meter.last_window >= MIN_CPU_WINDOW


@pytest.fixture
def busy_cores():
    """Two busy loops per core at normal priority (niced load does not count as busy).

    Two per core: on a shared machine other people's niced jobs still get some CPU."""
    def normal_priority() -> None:
        os.setpriority(os.PRIO_PROCESS, 0, 0)  # a niced test run would nice them too

    try:
        loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"],
                                  preexec_fn=normal_priority)
                 for _ in range(2 * (os.cpu_count() or 1))]
    except (subprocess.SubprocessError, PermissionError):
        pytest.skip("cannot start busy loops at normal priority (this test run is niced and "
                    "may not lower a child's nice value): niced load never counts as busy")
    try:
        for loop in loops:
            process = psutil.Process(loop.pid)
            wait_for(lambda p=process: p.cpu_times().user > 0.05, 30, "a busy loop to run")
        yield loops
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()


def test_gate_closes_for_high_cpu_on_its_first_check(busy_cores, tmp_path):
    """A just-started agent has no earlier CPU sample: its first check must still see the load."""
    settings = GateSettings(max_cpu_percent=25, **QUIET_LIMITS)  # the default limit
    reasons = blocking_reasons(settings, tmp_path, meter=CpuMeter())
    assert reasons and reasons[0].startswith("CPU ")
    gate = GateMonitor(settings, tmp_path, meter=CpuMeter()).start()
    try:
        assert gate.state.paused, "a copy started while the CPU was busy"
    finally:
        gate.stop()
