"""Instrument sessions with live sync: delivery after the session ends, the acquisition's
write throughput while live sync runs, and the cost of watching many files while idle.

Run from the repository root::

    .venv/bin/python benchmarks/sessions.py                        # 1 GiB over 30 s, 1 round
    .venv/bin/python benchmarks/sessions.py --total-gib 4 --minutes 2 --runs 3   # the issue's
    .venv/bin/python benchmarks/sessions.py --skip-idle --runs 3
    .venv/bin/python benchmarks/sessions.py --skip-writer --idle-files 10000

Method
------
A facility in a fresh folder on a real disk (incoming, managed, destination; tmpfs is
refused), the gate open (``max_cpu_percent`` 100: with the default 25 % the live sync
pauses whenever the machine is busy, which protects the acquisition but on a shared
machine never syncs), ``poll_seconds`` 0.5, readiness ``quiet_seconds`` 5 while the data
is written, ``[sessions] live_quiet_seconds`` 2.

A simulated acquisition (a separate process, as the microscope software is) writes files
of 16 to 256 MiB (random sizes, the same sequence in every scenario) one after the other
into ``incoming/<user>/<dataset>/`` at a steady byte rate (``--total-gib`` over
``--minutes``), 4 MiB per write, ``fdatasync`` when a file is closed (so that the disk's
share shows; ``--no-fsync``: not). Its throughput is the bytes written over the seconds
spent inside ``write`` and ``fdatasync``; with pacing, its wall time is the same in every
scenario unless it falls behind, which is reported too (the "paced rate"). Three
scenarios, interleaved over ``--runs`` rounds, medians reported:

- ``alone``: the writer, no agent (the reference throughput);
- ``live``: an Agent (in a thread of this process) with a session open and live sync on.
  When the writer's last file is closed (or ``--end-after`` seconds later), the session
  is ended (and the quiet period set to 0: the user said the session is over); timed:
  session end -> dataset DONE in the journal ("delivered, verified"; the agent's
  after-delivery hook fires). The agent's next pass makes a last live-sync pass (the rest
  of a large file staged in ranges while it was written, the small files not synced yet),
  claims the dataset and delivers it, taking the staged copies over;
- ``without``: the same Agent without a session. It claims the dataset after its quiet
  period; timed: ready (writer done + quiet period) -> DONE (the quiet period is a
  setting, not transfer time; the poll's latency counts, as it does with live sync).

Idle overhead: ``autotx run -c CONFIG`` (what the service runs) as a subprocess, with
``poll_seconds`` 5 (the config's default; ``--idle-poll``). First with nothing to do (the
reference), then with a session open over ``--idle-files`` files of 1 KiB in the session
user's folder: the initial sync runs at a 0.5 s poll until the journal lists every file
as staged, then the agent is restarted with the idle poll and watches. Its CPU time (user
+ system, psutil) over ``--idle-seconds`` of wall time is the overhead, in % of one core.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
from _machine import cpu_model, mount_of  # benchmarks/_machine.py, beside this script

from autotx_lib import __version__ as autotx_version
from autotx_lib.config import Config, SessionSettings
from autotx_lib.journal import Journal
from autotx_lib.journal.instrument_sessions import SessionStore
from autotx_lib.transfer.agent import Agent
from autotx_lib.transfer.live_sync import GROWING_MIN_BYTES, staging_root
from autotx_lib.transfer.sessions import end_session, start_session
from autotx_lib.transfer.status import status

MiB = 1024 * 1024
USER, DATASET = "alice", "run1"
QUIET_SECONDS = 5.0  # while writing: the agent without live sync must not claim mid-acquisition
LIVE_QUIET_SECONDS = 2.0
POLL_SECONDS = 0.5
CHUNK = 4 * MiB
TARGET_DELIVERY, TARGET_WRITER, TARGET_IDLE = 0.10, 0.95, 2.0
SCENARIOS = ("alone", "live", "without")


# --- the machine --------------------------------------------------------------------


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def print_header(workdir: Path) -> None:
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    point, device, fstype = mount_of(workdir)
    print("autotx sessions benchmark (live sync)")
    print(f"  machine : {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable), "
          f"{cpu_model()}, {mem_kib / 1024 ** 2:.1f} GiB RAM")
    print(f"  system  : {platform.platform()}")
    print(f"  python  : {sys.version.split()[0]}; autotx_lib {autotx_version}")
    print(f"  disk    : {workdir} on {device} ({fstype}, mounted at {point})")
    print(f"  load    : {load()}")


def check_disk(base: Path) -> None:
    _, _, fstype = mount_of(base)
    if fstype in {"tmpfs", "ramfs", "overlay"}:
        sys.exit(f"{base} is on {fstype}, not a real disk; pass --dir on a local disk")


def sync() -> None:
    subprocess.run(["sync"], check=True)


# --- the facility ---------------------------------------------------------------------


def make_facility(workdir: Path, *, live_sync: bool, poll: float = POLL_SECONDS) -> Config:
    destination = workdir / "storage"
    (destination / USER).mkdir(parents=True)
    return Config(incoming=workdir / "incoming", managed=workdir / "managed",
                  destination=destination, host_alias="bench-pc", poll_seconds=poll,
                  readiness={"quiet_seconds": QUIET_SECONDS},
                  gate={"max_cpu_percent": 100, "min_available_memory_mb": 0},
                  sessions={"live_sync": live_sync, "live_quiet_seconds": LIVE_QUIET_SECONDS})


def config_file(config: Config, path: Path) -> Path:
    """The facility as TOML for ``autotx run`` (only what differs from the defaults)."""
    path.write_text(
        f'incoming = "{config.incoming}"\nmanaged = "{config.managed}"\n'
        f'destination = "{config.destination}"\nhost_alias = "{config.host_alias}"\n'
        f'poll_seconds = {config.poll_seconds}\n'
        f'[readiness]\nquiet_seconds = {config.readiness.quiet_seconds}\n'
        '[gate]\nmax_cpu_percent = 100\nmin_available_memory_mb = 0\n'
        f'[sessions]\nlive_sync = {str(config.sessions.live_sync).lower()}\n'
        f'live_quiet_seconds = {config.sessions.live_quiet_seconds}\n')
    return path


# --- the simulated acquisition ----------------------------------------------------------


def file_sizes(total: int, smallest: int, largest: int, seed: int = 15) -> list[int]:
    """Random sizes in [smallest, largest] MiB adding up to ``total`` bytes."""
    rng = random.Random(seed)
    sizes: list[int] = []
    while sum(sizes) < total:
        sizes.append(min(rng.randint(smallest, largest) * MiB, total - sum(sizes)))
    return sizes


@dataclass
class WriterResult:
    bytes: int
    wall: float  # first write to last fdatasync
    busy: float  # seconds inside write() and fdatasync()
    behind: float  # how far behind the steady schedule it ended
    finished: float  # time.monotonic() (system-wide clock) when the last file was closed

    @property
    def throughput(self) -> float:
        return self.bytes / self.busy


def write_acquisition(folder: str, sizes: list[int], rate: float, fsync: bool, results) -> None:
    """The writer process: files one after the other, paced at ``rate`` bytes/s."""
    pool = os.urandom(2 * CHUNK)  # a random slice per write: nothing compresses or repeats
    rng = random.Random(1)
    Path(folder).mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    written = 0
    busy = 0.0
    for index, size in enumerate(sizes):
        with open(os.path.join(folder, f"image_{index:04d}.ome.tif"), "wb") as handle:
            for offset in range(0, size, CHUNK):
                delay = start + written / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)  # the steady rate of an acquisition
                n = min(CHUNK, size - offset)
                at = rng.randrange(CHUNK)
                t0 = time.monotonic()
                handle.write(pool[at:at + n])
                busy += time.monotonic() - t0
                written += n
            t0 = time.monotonic()
            handle.flush()
            if fsync:
                os.fdatasync(handle.fileno())
            busy += time.monotonic() - t0
    end = time.monotonic()
    results.put(WriterResult(written, end - start, busy, max(0.0, end - start - written / rate),
                             end))


def run_writer(folder: Path, sizes: list[int], rate: float, fsync: bool) -> WriterResult:
    ctx = multiprocessing.get_context("spawn")  # no fork of a process with agent threads
    results = ctx.Queue()
    process = ctx.Process(target=write_acquisition, args=(str(folder), sizes, rate, fsync,
                                                             results))
    process.start()
    result = results.get()
    process.join()
    return result


# --- one scenario -------------------------------------------------------------------------


@dataclass
class Outcome:
    writer: WriterResult
    delivery: float | None = None  # session end (live) or claim (without) -> DONE
    staged_at_end: int = 0  # bytes live-synced when the session ended
    ranges_at_end: int = 0  # bytes staged of files still being written (or being copied)
    claim_after_end: float | None = None


class AgentThread:
    """An Agent running in a thread; records when it claims and delivers."""

    def __init__(self, config: Config):
        self.claimed = threading.Event()
        self.done = threading.Event()
        self.times: dict[str, float] = {}
        self.agent = Agent(config, on_event=self._event, after_delivery=[self._delivered])
        self.thread = threading.Thread(target=self.agent.run, name="agent", daemon=True)

    def _event(self, level: str, message: str) -> None:
        if "is ready; queued" in message:
            self.times["claimed"] = time.monotonic()
            self.claimed.set()

    def _delivered(self, row) -> None:
        self.times["done"] = time.monotonic()
        self.done.set()

    def start(self) -> AgentThread:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.agent.stop()
        self.thread.join()


def run_scenario(kind: str, base: Path, sizes: list[int], rate: float, fsync: bool,
                 timeout: float, end_after: float = 0.0) -> Outcome:
    workdir = Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=base))
    config = make_facility(workdir, live_sync=kind == "live")
    folder = config.incoming / USER / DATASET
    agent = None
    session = None
    if kind != "alone":
        if kind == "live":
            session = start_session(config, USER, started_by="benchmark")
        agent = AgentThread(config).start()
    try:
        outcome = Outcome(run_writer(folder, sizes, rate, fsync))
        if agent is None:
            return outcome
        if session is not None:
            time.sleep(end_after)  # the user ends the session this long after the last file
            staged = SessionStore(Journal(config.journal_url)).live_files(session.id)
            outcome.staged_at_end = sum(row.size for row in staged.values())
            outcome.ranges_at_end = staged_parts(config, session.id)
            config.readiness.quiet_seconds = 0  # the session is over: no quiet to wait for
            ended = time.monotonic()
            end_session(config)
        if not agent.done.wait(timeout):
            raise RuntimeError(f"{kind}: the dataset was not delivered within {timeout:.0f} s")
        if session is not None:
            outcome.delivery = agent.times["done"] - ended
            outcome.claim_after_end = agent.times["claimed"] - ended
        else:  # from the moment it was ready: complete, plus the quiet period (a setting)
            outcome.delivery = agent.times["done"] - (outcome.writer.finished + QUIET_SECONDS)
        check_delivered(config, sum(sizes))
        return outcome
    finally:
        if agent is not None:
            agent.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        sync()


def staged_parts(config: Config, session_id: int) -> int:
    """Bytes in the staging area's ``.part`` files: files staged in ranges as they are
    written (or a copy under way)."""
    total = 0
    for part in staging_root(config, session_id).rglob("*.part"):
        with contextlib.suppress(FileNotFoundError):  # finished (renamed) meanwhile
            total += part.stat().st_size
    return total


def check_delivered(config: Config, total: int) -> None:
    [row] = Journal(config.journal_url).datasets_in(["done"])
    if row.total_bytes != total:
        raise RuntimeError(f"delivered {row.total_bytes} bytes, expected {total}")


# --- idle overhead ------------------------------------------------------------------------


def start_agent_process(config_path: Path) -> subprocess.Popen:
    autotx = Path(sys.executable).parent / "autotx"
    command = [str(autotx)] if autotx.exists() else [sys.executable, "-m", "autotx_lib.cli"]
    return subprocess.Popen([*command, "run", "-c", str(config_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for(what: str, condition, timeout: float, process: subprocess.Popen) -> float:
    """Poll ``condition`` (a journal query) until true; returns the seconds it took."""
    start = time.monotonic()
    while not condition():
        if process.poll() is not None:
            raise RuntimeError(f"the agent exited ({process.returncode}) while waiting: {what}")
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting: {what}")
        time.sleep(0.2)  # the benchmark's own polling of the journal, not the agent's
    return time.monotonic() - start


def cpu_share(process: subprocess.Popen, seconds: float) -> float:
    """CPU time (user + system) of ``process`` over ``seconds`` of wall time, in %."""
    ps = psutil.Process(process.pid)
    before, t0 = ps.cpu_times(), time.monotonic()
    time.sleep(seconds)  # the measuring window
    after, t1 = ps.cpu_times(), time.monotonic()
    used = (after.user - before.user) + (after.system - before.system)
    return used / (t1 - t0) * 100


def stop_agent_process(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def make_small_files(folder: Path, count: int) -> None:
    for index in range(count):
        sub = folder / f"well_{index // 100:03d}"
        if index % 100 == 0:
            sub.mkdir(parents=True, exist_ok=True)
        (sub / f"field_{index % 100:03d}.tif").write_bytes(os.urandom(1024))


def idle_overhead(base: Path, files: int, seconds: float, poll: float) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="idle-", dir=base))
    config = make_facility(workdir, live_sync=True, poll=poll)
    path = config_file(config, workdir / "autotx.toml")
    journal = Journal(config.journal_url)
    print(f"\n== idle: autotx run, poll_seconds {poll:g}; {seconds:g} s windows; {load()} ==")
    try:
        agent = start_agent_process(path)
        try:
            wait_for("the agent's first pass", lambda: status(config).agent_state == "idle",
                     120, agent)
            reference = cpu_share(agent, seconds)
        finally:
            stop_agent_process(agent)
        print(f"  no session, nothing to do : {reference:5.2f} % of one core")

        make_small_files(config.incoming / USER / DATASET, files)
        session = start_session(config, USER, started_by="benchmark")
        store = SessionStore(journal)
        config.poll_seconds = POLL_SECONDS  # the initial sync at a quick poll ...
        agent = start_agent_process(config_file(config, path))
        try:
            took = wait_for(f"the initial sync of {files} files",
                            lambda: len(store.live_files(session.id)) >= files, 3600, agent)
        finally:
            stop_agent_process(agent)
        print(f"  initial sync of {files} files x 1 KiB: {took:.0f} s (poll {POLL_SECONDS:g} s)")
        config.poll_seconds = poll  # ... then the agent as configured, watching
        config.sessions.live_quiet_seconds = SessionSettings().live_quiet_seconds  # default
        agent = start_agent_process(config_file(config, path))
        try:
            wait_for("the agent's first pass", lambda: status(config).agent_state == "idle",
                     600, agent)
            watching = cpu_share(agent, seconds)
        finally:
            stop_agent_process(agent)
        if sum(row.copies for row in store.live_files(session.id).values()) != files:
            raise RuntimeError("files were synced again while the agent watched")
        print(f"  session over {files} synced files (live_quiet_seconds "
              f"{config.sessions.live_quiet_seconds:g}, the default): {watching:5.2f} % of one core "
              f"(about {watching / 100 * poll * 1000:.0f} ms of CPU per pass)")
        verdict = "ok" if watching <= TARGET_IDLE else "ABOVE TARGET"
        print(f"sessions_idle_cpu_percent_{files}_files_poll_{poll:g}s: {watching:.2f} "
              f"(target <= {TARGET_IDLE:g}) {verdict}")
        print(f"  (it grows with the number of files and shrinks with poll_seconds: roughly "
              f"{(watching - reference) / files * 1e4:.2f} % per 10,000 files at poll "
              f"{poll:g} s over the no-session agent; {load()} at the end)")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# --- reporting ------------------------------------------------------------------------------


def report(outcomes: dict[str, list[Outcome]], sizes: list[int], rate: float) -> None:
    total = sum(sizes)
    for kind in SCENARIOS:
        runs = outcomes[kind]
        mbs = statistics.median(o.writer.throughput for o in runs) / 1e6
        behind = max(o.writer.behind for o in runs)
        low, high = (f(o.writer.throughput for o in runs) / 1e6 for f in (min, max))
        line = (f"  {kind:<8} writer {mbs:8.1f} MB/s while busy (median, min {low:.0f}, "
                f"max {high:.0f}; "
                f"{statistics.median(o.writer.busy for o in runs):.1f} s busy of "
                f"{statistics.median(o.writer.wall for o in runs):.1f} s; at most "
                f"{behind:.1f} s behind schedule)")
        if kind != "alone":
            line += f"; to DONE {statistics.median(o.delivery for o in runs):6.2f} s"
            line += " after the session end" if kind == "live" else " after it was ready"
        print(line)
    live = outcomes["live"]
    staged = statistics.median(o.staged_at_end for o in live)
    ranges = statistics.median(o.ranges_at_end for o in live)
    claim = statistics.median(o.claim_after_end for o in live)
    print(f"  live: {staged / MiB:.0f} of {total / MiB:.0f} MiB were synced when the session "
          f"ended, and {ranges / MiB:.0f} MiB more of files still being written (median); "
          f"claimed {claim:.2f} s after the end (after the last live-sync pass)")
    delivery = statistics.median(o.delivery for o in live) / \
        statistics.median(o.delivery for o in outcomes["without"])
    verdict = "ok" if delivery <= TARGET_DELIVERY else "ABOVE TARGET"
    print(f"sessions_delivery_after_end_vs_without_live_sync: {delivery:.3f} "
          f"(target <= {TARGET_DELIVERY:g}) {verdict}")
    writer = statistics.median(o.writer.throughput for o in live) / \
        statistics.median(o.writer.throughput for o in outcomes["alone"])
    verdict = "ok" if writer >= TARGET_WRITER else "BELOW TARGET"
    print(f"sessions_writer_throughput_live_vs_alone: {writer:.3f} "
          f"(target >= {TARGET_WRITER:g}) {verdict}")
    paced = statistics.median(o.writer.bytes / o.writer.wall for o in live) / \
        statistics.median(o.writer.bytes / o.writer.wall for o in outcomes["alone"])
    verdict = "ok" if paced >= TARGET_WRITER else "BELOW TARGET"
    print(f"sessions_writer_paced_rate_live_vs_alone: {paced:.3f} "
          f"(target >= {TARGET_WRITER:g}) {verdict}   (bytes over wall time: did the "
          "acquisition keep its rate?)")
    live_s = statistics.median(o.delivery for o in live)
    per_gib = statistics.median(o.delivery for o in outcomes["without"]) / (total / 1024 / MiB)
    print(f"  (scaling: what is left at the session end "
          f"({(total - staged - ranges) / MiB:.0f} MiB here) is the files under "
          f"{GROWING_MIN_BYTES // MiB} MiB written in the last {LIVE_QUIET_SECONDS:g} s "
          "before it, and of a larger file still being written what it gained since its "
          "last range (about one agent pass), whatever the session's size; "
          f"without live sync all {total / MiB:.0f} MiB are copied ({per_gib:.2f} s per GiB "
          f"here): the ratio falls about as 1 / session size; from these figures, at 4 GiB "
          f"it would be about {live_s / (4 * per_gib):.3f})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--total-gib", type=float, default=1.0,
                        help="size of the session (default 1; the issue: 4)")
    parser.add_argument("--minutes", type=float, default=0.5,
                        help="how long the acquisition writes (default 0.5; the issue: 2)")
    parser.add_argument("--min-mib", type=int, default=16, help="smallest file (default 16)")
    parser.add_argument("--max-mib", type=int, default=256, help="largest file (default 256)")
    parser.add_argument("--runs", type=int, default=1,
                        help="interleaved rounds of the three writer scenarios (default 1)")
    parser.add_argument("--idle-files", type=int, default=10_000)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--idle-poll", type=float, default=5.0,
                        help="the idle agent's poll_seconds (default 5, the config default)")
    parser.add_argument("--end-after", type=float, default=0.0,
                        help="seconds from the last file closed to the session end (default "
                        "0: at once, the worst case for live sync)")
    parser.add_argument("--no-fsync", action="store_true",
                        help="the writer does not fdatasync its files (only CPU and page "
                        "cache contention show then)")
    parser.add_argument("--skip-writer", action="store_true")
    parser.add_argument("--skip-idle", action="store_true")
    parser.add_argument("--dir", type=Path, default=Path("/tmp"),
                        help="where to create the scratch folder (must be a real disk)")
    args = parser.parse_args(argv)
    if not 0 < args.min_mib <= args.max_mib:
        parser.error("--min-mib must be positive and at most --max-mib")
    check_disk(args.dir)
    base = Path(tempfile.mkdtemp(prefix="autotx-sessions-", dir=args.dir))
    try:
        print_header(base)
        if not args.skip_writer:
            total = int(args.total_gib * 1024 * MiB)
            sizes = file_sizes(total, args.min_mib, args.max_mib)
            rate = total / (args.minutes * 60)
            print(f"\n== session: {len(sizes)} files of {args.min_mib}-{args.max_mib} MiB, "
                  f"{total / MiB:.0f} MiB over {args.minutes * 60:.0f} s ({rate / 1e6:.1f} MB/s, "
                  f"{'no fdatasync' if args.no_fsync else 'fdatasync per file'}); "
                  f"{args.runs} round(s) of {', '.join(SCENARIOS)}; the session ends "
                  f"{args.end_after:g} s after the last file; {load()} ==")
            outcomes: dict[str, list[Outcome]] = {kind: [] for kind in SCENARIOS}
            for _ in range(args.runs):
                for kind in SCENARIOS:
                    outcomes[kind].append(run_scenario(kind, base, sizes, rate, not args.no_fsync,
                                                       timeout=600 + args.minutes * 60,
                                                       end_after=args.end_after))
            report(outcomes, sizes, rate)
            print(f"  ({load()} at the end)")
        if not args.skip_idle:
            idle_overhead(base, args.idle_files, args.idle_seconds, args.idle_poll)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
