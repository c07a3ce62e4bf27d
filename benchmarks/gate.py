"""The resource gate and the idle agent: pause/resume latency, bandwidth cap, idle cost.

Run from the repository root::

    .venv/bin/python benchmarks/gate.py                  # all three, full sizes
    .venv/bin/python benchmarks/gate.py --quick          # smaller and shorter: a smoke run
    .venv/bin/python benchmarks/gate.py --only pause     # or: bandwidth, idle

Method
------
Everything runs in a fresh folder on a real disk (tmpfs is refused), removed at the end,
also on Ctrl-C or SIGTERM; every child process is killed.

``pause``: an :class:`~autotx_lib.transfer.agent.Agent` runs in a thread (``run()``,
polling) on one dataset of 8 x 256 MiB (``--quick``: 8 x 64 MiB), capped at 100 MB/s
(``--quick``: 50 MB/s) so that the copy lasts about 20 s (10 s), with
``gate.max_cpu_percent=50`` (``--max-cpu``), ``hysteresis_seconds=2`` and the memory
limit off: only CPU can pause it. The copy's byte counter is sampled every 20 ms as the
total size of the data files in ``<destination>/.autotx-tmp`` (``on_progress``, about
twice a second, is too coarse for this). One trial: wait until the copy has run steadily
for 1.5 s, start one busy-loop process per core (``python -c "while True: pass"``), wait
until the counter has not moved for 1.5 s; the *pause latency* is from just before the
first busy loop started to the last increase of the counter. Then kill the busy loops;
the *resume latency* is from their death to the first increase, minus the hysteresis.
The gate's own decisions (its ``paused``/``resumed`` events) are timed too, which splits
each latency into "the gate noticed" and "the copy obeyed", and the machine's CPU use
between the load's end and the resumption is shown (the agent is paused then: it is
other people's load, which can hold the gate closed). Up to 5 trials (``--quick``: 3),
as long as the dataset lasts. The gate subtracts the agent's own CPU, not other
people's: on a shared machine it may pause by itself, or not start the copy at all
(the benchmark waits up to 4 minutes for it to run); such pauses are counted.

``bandwidth``: a 1 GiB dataset (8 x 128 MiB; ``--quick``: 200 MiB) at a cap of 20 MB/s
with the gate's limits relaxed (``max_cpu_percent=100``, no memory limit), default copy
settings (4 workers, readback verification). The achieved rate is the bytes copied
between the first and the last increase of the 20-ms counter over that time; also
shown: the slowest and fastest 5-s window, and the rate from the start of the copy to the
dataset's delivery (verification and sync included).

``idle``: 1,000 datasets (10 users x 100, 3 files of 1 KiB each) in incoming/ that are
never ready (``readiness.quiet_seconds=3600``, their files were just written); ``python
-m autotx_lib.cli run -c CONFIG`` runs as a subprocess with the default ``poll_seconds``
(5). After 10 s of settling its CPU time (user + system, psutil) is measured over 60 s
(``--quick``: 20 s) and its RSS sampled every second. Reported: CPU as a percentage of
one core, the CPU per poll, and the largest RSS.

Each line ``name: value (target) verdict`` states a measurement against the issue's
target; indented lines give the details. The machine is described in the header, with its
load: these numbers are only as quiet as the machine was.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from _machine import cpu_model, mount_of  # benchmarks/_machine.py, beside this script

from autotx_lib import __version__ as autotx_version
from autotx_lib.config import Config
from autotx_lib.transfer.agent import Agent, Progress

MiB = 1024 * 1024
USER, DATASET = "bench", "dataset"
SAMPLE_SECONDS = 0.02
PAUSE_TARGET_S = 1.0
RESUME_TARGET_S = 1.0  # beyond the hysteresis
BANDWIDTH_TOLERANCE = 0.05
IDLE_CPU_TARGET = 1.0  # percent of one core
IDLE_RSS_TARGET_MB = 150.0
BUSY_LOOP = "while True: pass"
REPO = Path(__file__).resolve().parent.parent


# --- the machine --------------------------------------------------------------------


def load() -> str:
    busy = psutil.cpu_percent(interval=1.0)
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg()) + \
        f", CPU {busy:.0f}% busy over 1 s"


def print_header(workdir: Path) -> None:
    mem = psutil.virtual_memory()
    point, device, fstype = mount_of(workdir)
    print("autotx gate benchmark")
    print(f"  machine : {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable), "
          f"{cpu_model()}, {mem.total / 1024 ** 3:.1f} GiB RAM "
          f"({mem.available / 1024 ** 3:.1f} available)")
    print(f"  system  : {platform.platform()}")
    print(f"  python  : {sys.version.split()[0]}; autotx_lib {autotx_version}; "
          f"psutil {psutil.__version__}")
    print(f"  disk    : {workdir} on {device} ({fstype}, mounted at {point})")
    print(f"  load    : {load()}")


def check_disk(base: Path) -> None:
    _, _, fstype = mount_of(base)
    if fstype in {"tmpfs", "ramfs", "overlay"}:
        sys.exit(f"{base} is on {fstype}, not a real disk; pass --dir on a local disk")


# --- data, children, cleanup ----------------------------------------------------------


def write_dataset(root: Path, files: int, size: int) -> int:
    """``files`` files of ``size`` bytes (random blocks, each stamped with its number)."""
    root.mkdir(parents=True, exist_ok=True)
    block = bytearray(os.urandom(4 * MiB))
    for i in range(files):
        with open(root / f"image_{i:02d}.ome.tif", "wb") as handle:
            for n, start in enumerate(range(0, size, len(block))):
                block[:8] = (i * 10 ** 6 + n).to_bytes(8, "little")
                handle.write(block[:min(len(block), size - start)])
    return files * size


@dataclass
class Children:
    """Everything to undo at the end, whatever happens: processes and agent threads."""

    processes: list[subprocess.Popen] = field(default_factory=list)
    agents: list[tuple[Agent, threading.Thread]] = field(default_factory=list)

    def spawn(self, argv: list[str], **kwargs) -> subprocess.Popen:
        # own session: a Ctrl-C reaches only this script, which then kills them itself
        process = subprocess.Popen(argv, start_new_session=True, stdin=subprocess.DEVNULL,
                                   **kwargs)
        self.processes.append(process)
        return process

    def kill(self, process: subprocess.Popen) -> None:
        if process.poll() is None:
            process.kill()
        process.wait()
        if process in self.processes:
            self.processes.remove(process)

    def stop_agent(self, agent: Agent, thread: threading.Thread) -> None:
        """Stop an agent thread quickly: no new file, the gate open, no bandwidth cap."""
        agent.stop()
        gate = agent.config.gate
        gate.max_cpu_percent, gate.hysteresis_seconds, gate.bandwidth_mb_s = 100, 0, None
        thread.join(timeout=60)
        if (agent, thread) in self.agents:
            self.agents.remove((agent, thread))

    def close(self) -> None:
        for process in list(self.processes):
            self.kill(process)
        for agent, thread in list(self.agents):
            self.stop_agent(agent, thread)


def _sigterm(*_) -> None:
    raise SystemExit(143)  # runs the finally blocks: children killed, folders removed


# --- watching a copy ------------------------------------------------------------------


class ByteCounter:
    """Samples the copied bytes every 20 ms: total size of the files under the tmp area.

    ``samples`` holds (time.monotonic(), bytes) with bytes as a high-water mark (the tmp
    folder vanishes on delivery); ``last_increase`` is when it last grew.
    """

    def __init__(self, tmp_root: Path, prefix: str = "image_"):
        self.tmp_root, self.prefix = tmp_root, prefix  # data files only, not the manifest
        self.samples: list[tuple[float, int]] = []
        self.value = 0
        self.first_increase: float | None = None
        self.last_increase = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="byte-counter", daemon=True)

    def __enter__(self) -> ByteCounter:
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join()

    def _size(self) -> int:
        total, stack = 0, [self.tmp_root]
        while stack:
            try:
                entries = list(os.scandir(stack.pop()))
            except OSError:
                continue
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(Path(entry.path))
                    elif entry.name.startswith(self.prefix):
                        total += entry.stat(follow_symlinks=False).st_size
                except OSError:
                    continue
        return total

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            size, now = self._size(), time.monotonic()
            if size > self.value:
                self.value, self.last_increase = size, now
                self.first_increase = self.first_increase or now
            self.samples.append((now, self.value))

    def wait_running(self, seconds: float, timeout: float) -> bool:
        """Wait until the counter has grown steadily (no gap > 0.5 s) for ``seconds``."""
        deadline, since = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            now = time.monotonic()
            if now - self.last_increase > 0.5:
                since = None
            elif since is None:
                since = now
            elif now - since >= seconds:
                return True
            time.sleep(0.05)
        return False

    def wait_flat(self, after: float, flat: float, timeout: float) -> float | None:
        """Wait until the counter has not moved for ``flat`` s; return its last increase."""
        deadline = after + timeout
        while time.monotonic() < deadline:
            if time.monotonic() - self.last_increase >= flat:
                return self.last_increase
            time.sleep(0.02)
        return None

    def wait_increase(self, after: float, timeout: float) -> float | None:
        """Wait for the first increase after ``after`` (the counter is still then); its time."""
        base, deadline = self.value, after + timeout
        while time.monotonic() < deadline:
            if self.last_increase > after:
                return next(t for t, v in list(self.samples) if t > after and v > base)
            time.sleep(0.02)
        return None

    def value_at(self, t: float) -> int:
        return next((v for s, v in reversed(list(self.samples)) if s <= t), 0)


class AgentRun:
    """An Agent polling in a thread; its progress and gate events with their times."""

    def __init__(self, cfg: Config, children: Children):
        self.progress: list[tuple[float, Progress]] = []
        self.events: list[tuple[float, str]] = []
        self.error: BaseException | None = None
        self.agent = Agent(cfg, on_progress=lambda p: self.progress.append((time.monotonic(), p)),
                           on_event=lambda level, msg: self.events.append((time.monotonic(), msg)))
        self.thread = threading.Thread(target=self._run, name="agent", daemon=True)
        children.agents.append((self.agent, self.thread))
        self.thread.start()

    def _run(self) -> None:
        try:
            self.agent.run(once=False)
        except BaseException as error:  # noqa: BLE001 - reported by the benchmark
            self.error = error

    def gate_events(self, kind: str, after: float, before: float = float("inf")) -> list[float]:
        prefix = {"paused": "transfer paused", "resumed": "transfer resumed"}[kind]
        return [t for t, msg in list(self.events) if msg.startswith(prefix) and after < t < before]


def make_config(workdir: Path, **gate) -> Config:
    destination = workdir / "destination"
    (destination / USER).mkdir(parents=True, exist_ok=True)
    return Config(incoming=workdir / "incoming", managed=workdir / "managed",
                  destination=destination, readiness={"quiet_seconds": 0}, poll_seconds=0.5,
                  gate={"min_available_memory_mb": 0, **gate})


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSES TARGET"


def values(xs: list[float]) -> str:
    return ", ".join(f"{x:.2f}" for x in xs)


def median_line(name: str, xs: list[float], target: float, unit_note: str = "") -> None:
    if not xs:
        print(f"{name}: n/a (no trial completed) (target <= {target:g}) NOT MEASURED")
        return
    med = statistics.median(xs)
    print(f"{name}: median {med:.2f}{unit_note} (target <= {target:g}) {verdict(med <= target)}")
    print(f"  each: {values(xs)} (max {max(xs):.2f})")


# --- 1. pause and resume ----------------------------------------------------------------


@dataclass
class Trial:
    start: float  # busy loops started
    killed: float  # busy loops dead
    end: float
    stopped: float | None  # last byte before the pause
    resumed: float | None  # first byte after it
    decided: float | None  # the gate's "paused" event
    reopened: float | None  # the gate's "resumed" event
    others_percent: float  # machine CPU from the load's end to the resumption (agent paused)
    waited: float  # seconds waited beforehand for a steadily running copy


def busy_percent(before, after) -> float:
    """System-wide CPU busy between two psutil.cpu_times() (no shared psutil state)."""
    total = sum(after) - sum(before)
    idle = (after.idle + getattr(after, "iowait", 0)) - (before.idle + getattr(before, "iowait", 0))
    return 100 * (1 - idle / total) if total > 0 else 0.0


def pause_trial(counter: ByteCounter, run: AgentRun, children: Children,
                hysteresis: float, waited: float) -> Trial:
    """Load every core until the copy stops, then release it and wait for the copy to resume."""
    start = time.monotonic()
    loops = [children.spawn([sys.executable, "-c", BUSY_LOOP], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL) for _ in range(os.cpu_count() or 1)]
    stopped = counter.wait_flat(start, flat=1.5, timeout=10)
    for process in loops:
        children.kill(process)
    killed, cpu_at_kill = time.monotonic(), psutil.cpu_times()
    resumed = counter.wait_increase(killed, timeout=hysteresis + 15)
    end = time.monotonic()
    others = busy_percent(cpu_at_kill, psutil.cpu_times())
    decided = run.gate_events("paused", start, killed)
    reopened = run.gate_events("resumed", killed, end)
    return Trial(start, killed, end, stopped, resumed, decided[0] if decided else None,
                 reopened[0] if reopened else None, others, waited)


def describe_trial(i: int, trial: Trial, hysteresis: float) -> str:
    def rel(t: float | None, origin: float, minus: float = 0.0) -> str:
        return "never" if t is None else f"{t - origin - minus:.2f} s"

    return (f"  trial {i}: stopped {rel(trial.stopped, trial.start)} after the load began "
            f"(gate paused at {rel(trial.decided, trial.start)}); resumed "
            f"{rel(trial.resumed, trial.killed, hysteresis)} after load end + hysteresis "
            f"(gate reopened at {rel(trial.reopened, trial.killed, hysteresis)}); machine CPU "
            f"meanwhile {trial.others_percent:.0f}%; waited {trial.waited:.1f} s for the gate")


def bench_pause(base: Path, quick: bool, children: Children, max_cpu: float) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="pause-", dir=base))
    files, size, rate = (8, 64 * MiB, 50) if quick else (8, 256 * MiB, 100)
    hysteresis, max_trials, cores = 2.0, (3 if quick else 5), os.cpu_count() or 1
    wait_limit = 60.0 if quick else 240.0
    cfg = make_config(workdir, max_cpu_percent=max_cpu, hysteresis_seconds=hysteresis,
                      bandwidth_mb_s=rate)
    total = write_dataset(cfg.incoming / USER / DATASET, files, size)
    os.sync()
    print(f"\n== pause: {files} files x {size // MiB} MiB at {rate} MB/s, max_cpu_percent "
          f"{max_cpu:g}, "
          f"hysteresis {hysteresis:g} s, {cores} busy loops; {load()} ==")
    trials: list[Trial] = []
    with ByteCounter(cfg.tmp_path) as counter:
        run = AgentRun(cfg, children)
        while len(trials) < max_trials:
            if total - counter.value < rate * 1e6 * 4:
                print(f"  (the dataset is nearly copied: {len(trials)} trials)")
                break
            waiting = time.monotonic()
            if not counter.wait_running(1.5, timeout=wait_limit):
                print(f"  (the copy did not run steadily within {wait_limit:.0f} s: the gate is "
                      f"held closed by other load, or the agent failed: {run.error!r})")
                break
            trials.append(pause_trial(counter, run, children, hysteresis,
                                      max(time.monotonic() - waiting - 1.5, 0.0)))
            print(describe_trial(len(trials), trials[-1], hysteresis))
        children.stop_agent(run.agent, run.thread)
    stray = [t for t in run.gate_events("paused", 0)
             if not any(tr.start <= t <= tr.end for tr in trials)]
    median_line("pause_latency_s", [t.stopped - t.start for t in trials if t.stopped],
                PAUSE_TARGET_S)
    median_line("resume_latency_s", [t.resumed - t.killed - hysteresis for t in trials
                                     if t.resumed], RESUME_TARGET_S,
                f" beyond the {hysteresis:g} s hysteresis")
    decided = [t.decided - t.start for t in trials if t.decided]
    reopened = [t.reopened - t.killed - hysteresis for t in trials if t.reopened]
    if decided and reopened:
        print(f"  the gate's own decisions: paused after median {statistics.median(decided):.2f} s, "
              f"reopened median {statistics.median(reopened):.2f} s after load end + hysteresis")
    print(f"  gate pauses outside the trials: {len(stray)} (other load on the machine: the gate "
          "subtracts only the agent's own CPU)")
    print(f"  ({load()} at the end)")
    shutil.rmtree(workdir, ignore_errors=True)


# --- 2. bandwidth cap -------------------------------------------------------------------


def window_rates(counter: ByteCounter, first: float, last: float, width: float) -> list[float]:
    edges = [first + i * width for i in range(int((last - first) // width) + 1)]
    return [(counter.value_at(b) - counter.value_at(a)) / width / 1e6
            for a, b in zip(edges, edges[1:], strict=False)]


def bench_bandwidth(base: Path, quick: bool, children: Children, max_cpu: float) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bandwidth-", dir=base))
    cap, files, size = 20.0, 8, (25 if quick else 128) * MiB
    cfg = make_config(workdir, max_cpu_percent=100, bandwidth_mb_s=cap)
    total = write_dataset(cfg.incoming / USER / DATASET, files, size)
    os.sync()
    print(f"\n== bandwidth: {files} files x {size // MiB} MiB ({total / MiB:.0f} MiB) at a cap of "
          f"{cap:g} MB/s, gate limits relaxed; {load()} ==")
    dest = cfg.destination / USER / DATASET
    with ByteCounter(cfg.tmp_path) as counter:
        run = AgentRun(cfg, children)
        deadline = time.monotonic() + 2 * total / (cap * 1e6) + 60
        while not dest.is_dir() and run.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        delivered = time.monotonic()
        children.stop_agent(run.agent, run.thread)
    if not dest.is_dir() or counter.first_increase is None or counter.value != total:
        print(f"bandwidth_rate_mb_s: n/a (not delivered; copied {counter.value} of {total} "
              f"bytes; agent error {run.error!r}) MISSES TARGET")
        return
    first, last = counter.first_increase, counter.last_increase
    rate = (total - counter.value_at(first)) / (last - first) / 1e6
    deviation = (rate - cap) / cap * 100
    ok = abs(rate - cap) <= BANDWIDTH_TOLERANCE * cap
    print(f"bandwidth_rate_mb_s: {rate:.2f} (target {cap:g} +-5%: {cap * 0.95:.1f}..{cap * 1.05:.1f})"
          f" {verdict(ok)}")
    print(f"bandwidth_deviation_percent: {deviation:+.2f} (target within +-5) {verdict(ok)}")
    windows = window_rates(counter, first, last, 5.0)
    if windows:
        print(f"  5-s windows: min {min(windows):.2f}, max {max(windows):.2f} MB/s "
              f"({len(windows)} windows)")
    progress = [(t, p.bytes_done) for t, p in run.progress]
    done = next((t for t, b in progress if b == total), None)
    moving = next((t, b) for t, b in progress if b > 0) if done else None
    if done and moving and done > moving[0]:
        print(f"  the same from on_progress (about 2 samples/s): "
              f"{(total - moving[1]) / (done - moving[0]) / 1e6:.2f} MB/s")
    if run.progress:
        started = run.progress[0][1].started
        print(f"  copy start to delivery (verification and sync included): "
              f"{total / (delivered - started) / 1e6:.2f} MB/s over {delivered - started:.1f} s")
    print(f"  ({load()} at the end)")
    shutil.rmtree(workdir, ignore_errors=True)


# --- 3. the idle agent ------------------------------------------------------------------


def write_incoming(incoming: Path, users: int, datasets: int, files: int) -> None:
    """``users`` x ``datasets`` dataset folders of ``files`` files of 1 KiB each."""
    payload = os.urandom(1024)
    for u in range(users):
        for d in range(datasets):
            folder = incoming / f"user{u:02d}" / f"plate_{d:03d}"
            folder.mkdir(parents=True)
            for f in range(files):
                (folder / f"field_{f}.tif").write_bytes(payload)


def bench_idle(base: Path, quick: bool, children: Children, max_cpu: float) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="idle-", dir=base))
    users, datasets, files = 10, 100, 3
    settle, seconds = 10.0, (20.0 if quick else 60.0)
    write_incoming(workdir / "incoming", users, datasets, files)
    (workdir / "destination").mkdir()
    config = workdir / "autotx.toml"
    config.write_text(f'incoming = "{workdir / "incoming"}"\nmanaged = "{workdir / "managed"}"\n'
                      f'destination = "{workdir / "destination"}"\n\n'
                      "[readiness]\nquiet_seconds = 3600\n", encoding="utf-8")
    poll = Config.model_fields["poll_seconds"].default
    print(f"\n== idle: {users * datasets} datasets ({users} users x {datasets}, {files} files each)"
          f" not ready; `autotx run`, poll every {poll:g} s; {settle:g} s settling, "
          f"{seconds:g} s measured; {load()} ==")
    log_path = workdir / "agent.log"
    with open(log_path, "wb") as log:
        process = children.spawn([sys.executable, "-m", "autotx_lib.cli", "run", "-c",
                                  str(config)], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    time.sleep(settle)
    rss, cpu, elapsed = measure_process(process, seconds)
    alive = process.poll() is None
    process.terminate()  # SIGTERM: the agent stops cleanly
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=15)
    children.kill(process)
    if not alive or cpu is None:
        tail = log_path.read_text(errors="replace")[-2000:]
        print(f"idle_cpu_percent: n/a (the agent exited early) MISSES TARGET\n{tail}")
        return
    claimed = sum(1 for _ in (workdir / "incoming").glob("*/*"))
    percent = cpu / elapsed * 100
    print(f"idle_cpu_percent_of_core: {percent:.2f} (target <= {IDLE_CPU_TARGET:g}) "
          f"{verdict(percent <= IDLE_CPU_TARGET)}")
    print(f"idle_rss_mb: max {max(rss):.1f} (target <= {IDLE_RSS_TARGET_MB:g}) "
          f"{verdict(max(rss) <= IDLE_RSS_TARGET_MB)}")
    print(f"  CPU {cpu:.2f} s over {elapsed:.1f} s, about {cpu / (elapsed / poll) * 1000:.0f} ms "
          f"per poll; RSS min {min(rss):.1f}, median {statistics.median(rss):.1f} MB; "
          f"{claimed} of {users * datasets} datasets still in incoming/ (none ready)")
    print(f"  ({load()} at the end)")
    shutil.rmtree(workdir, ignore_errors=True)


def measure_process(process: subprocess.Popen, seconds: float
                    ) -> tuple[list[float], float | None, float]:
    """RSS samples (MB, every second) and CPU seconds (with children) over ``seconds``."""
    def cpu_of(proc: psutil.Process) -> float:
        times = [proc.cpu_times()] + [c.cpu_times() for c in proc.children(recursive=True)]
        return sum(t.user + t.system for t in times)

    try:
        proc = psutil.Process(process.pid)
        start, cpu0, rss = time.monotonic(), cpu_of(proc), []
        while time.monotonic() - start < seconds and process.poll() is None:
            rss.append(proc.memory_info().rss / 1e6)
            time.sleep(1.0)
        return rss, cpu_of(proc) - cpu0, time.monotonic() - start
    except psutil.NoSuchProcess:
        return [0.0], None, 0.0


# --- main -------------------------------------------------------------------------------

BENCHES = {"pause": bench_pause, "bandwidth": bench_bandwidth, "idle": bench_idle}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller and shorter: a smoke run")
    parser.add_argument("--only", choices=list(BENCHES), help="run one measurement")
    parser.add_argument("--max-cpu", type=float, default=50.0, help="gate.max_cpu_percent "
                        "for the pause measurement (default 50)")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()),
                        help="where to create the scratch folder (must be a real disk)")
    args = parser.parse_args(argv)
    check_disk(args.dir)
    signal.signal(signal.SIGTERM, _sigterm)
    base = Path(tempfile.mkdtemp(prefix="autotx-gate-bench-", dir=args.dir))
    children = Children()
    try:
        print_header(base)
        for name, bench in BENCHES.items():
            if args.only in (None, name):
                bench(base, args.quick, children, args.max_cpu)
    except KeyboardInterrupt:
        print("\ninterrupted: killing child processes, removing the scratch folder",
              file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        children.close()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
