"""The resource gate: keep the agent's hands off the machine while the instrument needs it.

Transfers pause while any condition holds and resume once all have been clear for a
hysteresis period (AutoTx: one reading over a limit pauses, a few seconds under it
resumes):

* system CPU above ``max_cpu_percent``: work at normal priority (user, system, interrupts);
  the agent's own share, niced background jobs, I/O wait and hypervisor steal not counted.
  A figure covers the last 0.1 to 1 s (:class:`CpuMeter`): the meter keeps its recent
  samples, so a reading waits only when no sample of the last second is 0.1 s old yet,
* available memory below ``min_available_memory_mb``,
* a blacklisted process running (names compared case-insensitively, ``.exe`` optional),
* free space at the destination below ``min_free_destination_mb``,
* outside the configured time windows,
* a manual suspension (:mod:`autotx_lib.transfer.control`).

:func:`pause_reasons` is the pure decision; :class:`GateMonitor` samples the machine in
a thread while a copy runs and gives the copy a :meth:`GateMonitor.throttle` hook that
blocks while paused (mid-file: no progress is lost) and enforces the bandwidth cap.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from autotx_lib.config import GateSettings, TimeWindow
from autotx_lib.errors import CopyInterrupted, DestinationError
from autotx_lib.transfer.bandwidth import resolve as resolve_bandwidth

MIN_CPU_WINDOW = 0.1  # seconds: over less, CPU counters (100 ticks/s) say nothing useful
MAX_CPU_WINDOW = 1.0  # seconds: over more, a load that just began would be averaged away
NOT_BUSY = ("idle", "iowait", "nice", "steal")  # none of them competes with an acquisition
NOT_COUNTED = ("guest", "guest_nice")  # already inside user and nice (Linux)
RATE_CHECK_SECONDS = 0.25  # the bandwidth cap is asked at most this often by the copy threads


def _cpu_total(times) -> float:
    return sum(getattr(times, k) for k in times._fields if k not in NOT_COUNTED)


def busy_percent(before, after, own_seconds: float) -> float:
    """Share of all CPU time between two ``psutil.cpu_times()`` samples spent on work at
    normal priority, ``own_seconds`` (the agent's own CPU time meanwhile) left out.

    Shares are taken of the fields' own sum, not of wall time: the sum is what the
    kernel accounted, whatever the number of cores.

    Raises
    ------
    ValueError
        When no CPU time passed between the samples (a zero-length window says nothing).
    """
    delta = {k: getattr(after, k) - getattr(before, k) for k in after._fields}
    total = _cpu_total(after) - _cpu_total(before)
    if total <= 0:
        raise ValueError("no CPU time passed between the two samples; take them further apart")
    busy = total - sum(delta.get(k, 0.0) for k in NOT_BUSY) - own_seconds
    return min(max(100.0 * busy / total, 0.0), 100.0)


@dataclass(frozen=True)
class _CpuSample:
    at: float  # time.monotonic()
    system: tuple  # psutil.cpu_times()
    own: float  # this process's CPU seconds, all threads (user + system)


class CpuMeter:
    """System CPU busy share over the last 0.1 to 1 s, the agent's own share left out.

    Every reading is also a sample for later readings: one that follows an earlier
    reading (or :meth:`prime`) by 0.1 to 1 s returns at once, measured since that
    sample; otherwise it waits until its window is 0.1 s long. A niced agent's own time
    is counted as nice, which is left out already. Thread-safe.
    """

    def __init__(self) -> None:
        self._me = psutil.Process()
        self.pid = self._me.pid
        self._niced = self._me.nice() > 0
        self._samples: deque[_CpuSample] = deque()
        self._lock = threading.Lock()
        self.last_window = 0.0  # seconds covered by the latest reading

    def _sample(self) -> _CpuSample:
        own = self._me.cpu_times()
        return _CpuSample(time.monotonic(), psutil.cpu_times(), own.user + own.system)

    def _keep(self, sample: _CpuSample) -> None:
        self._samples.append(sample)
        while sample.at - self._samples[0].at > MAX_CPU_WINDOW:
            self._samples.popleft()

    def prime(self) -> None:
        """Take a sample now, so that a reading 0.1 to 1 s later need not wait."""
        with self._lock:
            self._keep(self._sample())

    def busy_percent(self) -> float:
        """The busy share (0-100) since the newest sample that is at least 0.1 s old."""
        with self._lock:
            now = time.monotonic()
            recent = [s for s in self._samples if now - s.at <= MAX_CPU_WINDOW]
            ripe = [s for s in recent if now - s.at >= MIN_CPU_WINDOW]
            if ripe:
                base = ripe[-1]
            else:  # the first reading, or none for a while: wait for a window of 0.1 s
                if not recent:
                    recent = [self._sample()]
                    self._keep(recent[0])
                base = recent[0]
                time.sleep(max(MIN_CPU_WINDOW - (time.monotonic() - base.at), 0.0))
            current = self._sample()
            while _cpu_total(current.system) <= _cpu_total(base.system):  # never over 0.1 s
                time.sleep(MIN_CPU_WINDOW)  # but a figure from no CPU time would be made up
                current = self._sample()
            self._keep(current)
            self.last_window = current.at - base.at
            own = 0.0 if self._niced else current.own - base.own
            return busy_percent(base.system, current.system, own)


_shared_meter: CpuMeter | None = None
_shared_lock = threading.Lock()


def shared_cpu_meter() -> CpuMeter:
    """The process's one :class:`CpuMeter` (created at first use), shared by every check
    and monitor so that each reading serves as the next one's starting sample."""
    global _shared_meter
    with _shared_lock:
        if _shared_meter is None or _shared_meter.pid != os.getpid():  # a forked child: its own
            _shared_meter = CpuMeter()
        return _shared_meter


@dataclass(frozen=True)
class Reading:
    """One sample of the machine's state."""

    cpu_percent: float  # system-wide, the agent's own share removed
    available_mb: float
    processes: frozenset[str]  # lower-case names without .exe
    destination_free_mb: float | None
    now: dt.datetime
    suspension: str | None = None


def normalize_process_name(name: str) -> str:
    """``ZEN.EXE`` -> ``zen``: how blacklisted names are compared."""
    name = name.strip().lower()
    return name[:-4] if name.endswith(".exe") else name


def pause_reasons(reading: Reading, settings: GateSettings) -> list[str]:
    """Every reason to pause now (empty: transfers may run). Pure: no I/O."""
    reasons = []
    if reading.suspension:
        reasons.append(f"suspended by hand: {reading.suspension}")
    if reading.cpu_percent > settings.max_cpu_percent:
        reasons.append(f"CPU {reading.cpu_percent:.0f}% > {settings.max_cpu_percent:.0f}%")
    if reading.available_mb < settings.min_available_memory_mb:
        reasons.append(f"available memory {reading.available_mb:.0f} MB < "
                       f"{settings.min_available_memory_mb} MB")
    running = sorted({normalize_process_name(p) for p in settings.blacklisted_processes}
                     & reading.processes)
    if running:
        reasons.append(f"blacklisted process running: {', '.join(running)}")
    if reading.destination_free_mb is not None and settings.min_free_destination_mb and \
            reading.destination_free_mb < settings.min_free_destination_mb:
        reasons.append(f"destination free space {reading.destination_free_mb:.0f} MB < "
                       f"{settings.min_free_destination_mb} MB")
    windows = [TimeWindow.parse(w) for w in settings.time_windows]
    if windows and not any(w.contains(reading.now) for w in windows):
        reasons.append(f"outside the transfer time windows ({'; '.join(settings.time_windows)})")
    return reasons


class Sampler:
    """Reads the machine: CPU (without the agent), memory, processes, destination space.

    ``meter`` defaults to the process's shared :class:`CpuMeter`.
    """

    def __init__(self, destination: Path | None, watch_processes: bool,
                 meter: CpuMeter | None = None):
        self.destination = destination
        self.watch_processes = watch_processes
        self.meter = meter or shared_cpu_meter()

    def read(self, suspension: str | None = None) -> Reading:
        cpu = self.meter.busy_percent()
        processes: frozenset[str] = frozenset()
        if self.watch_processes:
            names = set()
            for process in psutil.process_iter(["name"]):
                if process.info["name"]:
                    names.add(normalize_process_name(process.info["name"]))
            processes = frozenset(names)
        free = None  # an smb:// primary: its floor is checked per dataset, not sampled
        if self.destination is not None:
            with contextlib.suppress(OSError):
                free = shutil.disk_usage(self.destination).free / 1e6
        return Reading(cpu, psutil.virtual_memory().available / 1e6, processes, free,
                       dt.datetime.now(), suspension)


@dataclass
class GateState:
    """What the monitor decided: paused or not, and why."""

    paused: bool = False
    reasons: list[str] = field(default_factory=list)
    clear_since: float | None = None


class GateMonitor:
    """Samples the machine in a thread while a copy runs; the copy calls :meth:`throttle`.

    Parameters
    ----------
    settings : GateSettings
    destination : Path
    suspension : callable
        Returns the manual suspension's reason or None (read from the journal).
    on_change : callable
        Called with the list of reasons when the gate pauses, and with [] when it resumes.
    interval : float
        Seconds between samples (pausing takes effect within about this time).
    stall_seconds : float, optional
        No byte copied for this long while not paused aborts the copy (retried later).
    bandwidth : callable, optional
        Returns the cap in MB/s (None: no cap); read between chunks, so it can change.
    interrupted : callable, optional
        Returns True when the agent is stopping; the copy then gives up its files.
    meter : CpuMeter, optional
        Defaults to the process's shared one.
    """

    def __init__(self, settings: GateSettings, destination: Path | None, *,
                 suspension: Callable[[], str | None] = lambda: None,
                 on_change: Callable[[list[str]], None] = lambda reasons: None,
                 interval: float = 0.25, stall_seconds: float | None = None,
                 bandwidth: Callable[[], float | None] | None = None,
                 interrupted: Callable[[], bool] = lambda: False,
                 meter: CpuMeter | None = None):
        self.settings = settings
        self.sampler = Sampler(destination, bool(settings.blacklisted_processes), meter)
        self.suspension = suspension
        self.on_change = on_change
        self.interval = interval
        self.stall_seconds = stall_seconds
        self.bandwidth = bandwidth or (lambda: resolve_bandwidth(settings.bandwidth_mb_s))
        self.interrupted = interrupted
        self.state = GateState()
        self._resume = threading.Event()
        self._resume.set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._bucket_time = time.monotonic()
        self._bucket_bytes = 0.0
        self._last_progress = time.monotonic()
        self.stalled = False
        self._suspension_checked = 0.0
        self._suspension_value: str | None = None
        self._rate_checked: tuple[float, float | None] = (-RATE_CHECK_SECONDS, None)

    # --- sampling ---------------------------------------------------------------------

    def evaluate(self) -> list[str]:
        """Take one reading and update the paused state (with hysteresis); returns the reasons."""
        now = time.monotonic()
        if now - self._suspension_checked >= 1.0:  # the journal is read at most once a second
            self._suspension_value = self.suspension()
            self._suspension_checked = now
        reasons = pause_reasons(self.sampler.read(self._suspension_value), self.settings)
        state = self.state
        if reasons:
            state.reasons, state.clear_since = reasons, None
            if not state.paused:
                state.paused = True
                self._resume.clear()
                self.on_change(reasons)
        elif state.paused:
            state.clear_since = state.clear_since or now
            manual_only = all(r.startswith("suspended by hand") for r in state.reasons)
            if manual_only or now - state.clear_since >= self.settings.hysteresis_seconds:
                state.paused, state.reasons = False, []
                self._resume.set()
                self.on_change([])
        self._check_stall(now)
        return reasons

    def _check_stall(self, now: float) -> None:
        if self.state.paused:
            self._last_progress = now  # waiting on purpose is not stalling
            return
        if self.stall_seconds is not None and now - self._last_progress > self.stall_seconds:
            self.stalled = True
            self._resume.set()  # wake a waiting throttle so it can raise

    def start(self) -> GateMonitor:
        """Take a first reading (a copy never starts while paused) and start sampling."""
        self._last_progress = time.monotonic()
        self.evaluate()
        self._thread = threading.Thread(target=self._loop, name="autotx-gate", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sampling and release any waiting copy thread."""
        self._stop.set()
        self._resume.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.evaluate()
            except Exception:  # noqa: BLE001 - a failed reading must not stop the copy
                continue

    # --- the hook the copy calls ------------------------------------------------------

    def throttle(self, copied: int) -> None:
        """Called by copy threads after each chunk: wait while paused; keep the bandwidth cap.

        Raises
        ------
        DestinationError
            When the copy stalled (no progress for ``stall_seconds``): it is retried later.
        CopyInterrupted
            When the agent is stopping (SIGTERM): the file is abandoned, copied again later.
        """
        self._last_progress = time.monotonic()
        rate = self._current_rate()
        if rate:  # the cap first, so a pause decided meanwhile is obeyed before the next chunk
            self._take_tokens(copied, rate * 1e6)
        while not self._resume.wait(0.2):
            if self._stop.is_set() or self.interrupted():
                break
        if self.interrupted():
            raise CopyInterrupted()
        if self.stalled:
            raise DestinationError(self.sampler.destination or "the destination",
                                   f"the copy stalled (no progress for "
                                   f"{self.stall_seconds:.0f} s)")

    def _current_rate(self) -> float | None:
        """The cap, asked at most every ``RATE_CHECK_SECONDS``: with thousands of small files
        a question per chunk cost more than the bytes it throttled."""
        checked, rate = self._rate_checked
        now = time.monotonic()
        if now - checked >= RATE_CHECK_SECONDS:
            rate = self.bandwidth()
            self._rate_checked = (now, rate)  # one tuple: the copy threads read it unlocked
        return rate

    def _take_tokens(self, copied: int, bytes_per_s: float) -> None:
        with self._lock:
            now = time.monotonic()
            # bucket depth of 0.25 s: smooth enough for +-5% over a large dataset
            self._bucket_bytes = max(self._bucket_bytes - (now - self._bucket_time) * bytes_per_s,
                                     -0.25 * bytes_per_s)
            self._bucket_time = now
            self._bucket_bytes += copied
            wait = self._bucket_bytes / bytes_per_s
        if wait > 0:
            time.sleep(wait)

    def chunk_size(self, default: int) -> int:
        """Copy chunk size: smaller under a bandwidth cap so the rate stays smooth."""
        rate = self.bandwidth()
        if not rate:
            return default
        return int(min(default, max(256 * 1024, rate * 1e6 * 0.1)))


def blocking_reasons(settings: GateSettings, destination: Path | None,
                     suspension: str | None = None, meter: CpuMeter | None = None) -> list[str]:
    """One reading of the gate, without hysteresis (e.g. before starting a dataset).

    It waits up to 0.1 s for a CPU figure, unless the meter (default: the shared one)
    has a sample 0.1 to 1 s old (an earlier reading, or :func:`prime_cpu_meter`).
    """
    sampler = Sampler(destination, bool(settings.blacklisted_processes), meter)
    return pause_reasons(sampler.read(suspension), settings)


def prime_cpu_meter() -> None:
    """Sample the CPU now (e.g. when a pass over incoming/ starts), so that a gate check
    0.1 to 1 s later needs not wait for its CPU figure."""
    shared_cpu_meter().prime()
