"""Throughput of the autotx transfer agent against cp -r, rsync -a and rclone copy.

Run from the repository root::

    .venv/bin/python benchmarks/transfer.py             # both scenarios, 5 runs
    .venv/bin/python benchmarks/transfer.py --quick     # small sizes: a smoke run
    .venv/bin/python benchmarks/transfer.py --only small --runs 9

Method
------
Two scenarios: ``big`` (4 files x 256 MiB) and ``small`` (5,000 files x 32 KiB in
nested folders, plate/row/column style). Each is generated once, from random bytes,
at ``incoming/bench/dataset`` in a fresh folder on a real disk (tmpfs is refused).
Every command copies that same folder to the same filesystem:

- ``autotx-storage`` and ``autotx-cache``: ``Agent(cfg).run(once=True)`` with
  ``verify.mode = "storage"`` (the default: every file flushed, its cached pages dropped
  and read back from the disk) or ``"cache"`` (read back through the page cache), xxh3_128,
  default workers and readiness checks except ``quiet_seconds=0``. It claims the dataset
  (rename into processing/), copies, verifies, syncs, renames it into place and moves
  the source to managed/done/. Its own fsyncs/syncfs count in its time; no extra sync.
  Each mode has its own agent (journal, managed folder, destination); both take the
  dataset from the same incoming folder.
- ``cp``: ``cp -r SRC DST`` then ``sync``.
- ``rsync``: ``rsync -a SRC/ DST/`` then ``sync``.
- ``rclone``: ``rclone copy SRC DST`` then ``sync`` (default transfers/checkers).

Fairness: before each command every source file is read (page cache warm for all);
after each command its copy is put away and ``sync`` runs, outside the timing, so no
command pays for another's dirty pages. After autotx the source is renamed back from
managed/done/ into incoming/ (same filesystem). One Agent (one journal) serves all
runs of a scenario, as a long-running agent would.

Putting a copy away means deleting it, except in the many-files scenario: its copies are
renamed into a ``trash`` folder, deleted when the scenario ends. Deleting 5,000 files
just before the next command made that command pay for them: ext4 without a journal
(e.g. a VM's root disk) skips recently deleted inodes when it allocates new ones, checking
each one it passes (deleted less than 5 s ago, or 300 s while its inode-table block is
dirty), so creating 5,000 files cost 2 to 5 s of kernel time instead of 0.2 s, for every
contender alike (``perf``: ``ext4_create`` -> ``recently_deleted``), and hid the tools'
own differences. For the same reason, leave five minutes between two runs of this script
(emptying the trash deletes every copy), and expect noise while other work deletes many
files on the same disk. The small scenario's trash holds 5 copies per round (5 runs: 4.7 GiB).

The commands are interleaved (autotx-storage autotx-cache cp rsync rclone, autotx-storage
...) over ``--runs`` rounds, after one untimed warm-up round. Reported: the median seconds
and MB/s (10^6 bytes/s) of each command, the spread (max-min over median) as a noise hint,
and lines ``<scenario>_<mode>_vs_<reference>: ratio`` with ratio
``median(reference) / median(autotx)``, i.e. autotx's throughput relative to the
reference's, next to the targets of issue 10 (none where the issue sets none).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from _machine import cpu_model, mount_of  # benchmarks/_machine.py, beside this script

from autotx_lib import __version__ as autotx_version
from autotx_lib.config import Config
from autotx_lib.transfer.agent import Agent

MiB = 1024 * 1024
KiB = 1024
USER, DATASET = "bench", "dataset"
INSTALL_HINT = "apt-get update && apt-get install -y rsync rclone"

MANY_FILES = 100  # copies of a scenario with more files go to the trash, not deleted
MODES = ("storage", "cache")
# (scenario, verify mode) -> reference -> target ratio (None: reported, no target)
TARGETS: dict[tuple[str, str], dict[str, float | None]] = {
    ("big", "storage"): {"cp": 0.6, "rsync": 1.5, "rclone": None},
    ("big", "cache"): {"cp": 0.95, "rsync": None, "rclone": None},
    ("small", "storage"): {"cp": 1.5, "rsync": None, "rclone": None},
    ("small", "cache"): {"cp": 1.5, "rsync": None, "rclone": None},
}
REFERENCES = {
    "cp": lambda src, dst: ["cp", "-r", str(src), str(dst)],
    "rsync": lambda src, dst: ["rsync", "-a", f"{src}/", f"{dst}/"],
    "rclone": lambda src, dst: ["rclone", "copy", "--config", "", str(src), str(dst)],
}


@dataclass
class Scenario:
    name: str
    files: list[tuple[str, int]]  # (relpath, size)

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size in self.files)

    def describe(self) -> str:
        sizes = {size for _, size in self.files}
        each = human(sizes.pop()) if len(sizes) == 1 else "mixed sizes"
        return f"{len(self.files)} files x {each} ({self.total_bytes / MiB:.0f} MiB)"


def human(size: int) -> str:
    return f"{size / MiB:g} MiB" if size >= MiB else f"{size / KiB:g} KiB"


def make_scenarios(quick: bool) -> dict[str, Scenario]:
    """The big-file and the many-small-files datasets (smaller with ``--quick``)."""
    big_size = 16 * MiB if quick else 256 * MiB
    big = [(f"image_{i}.ome.tif", big_size) for i in range(4)]
    rows, cols, fields = (5, 10, 10) if quick else (10, 10, 50)  # 500 or 5,000 files
    small = [(f"plate/row_{r:02d}/col_{c:02d}/field_{f:03d}.tif", 32 * KiB)
             for r in range(rows) for c in range(cols) for f in range(fields)]
    return {"big": Scenario("big", big), "small": Scenario("small", small)}


# --- the machine --------------------------------------------------------------------


def tool_version(argv: list[str]) -> str:
    if shutil.which(argv[0]) is None:
        return f"not installed ({INSTALL_HINT})"
    out = subprocess.run(argv, capture_output=True, text=True).stdout
    return out.splitlines()[0].strip() if out else "?"


def print_header(workdir: Path) -> None:
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    point, device, fstype = mount_of(workdir)
    print("autotx transfer benchmark")
    print(f"  machine : {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable), "
          f"{cpu_model()}, {mem_kib / 1024 ** 2:.1f} GiB RAM")
    print(f"  system  : {platform.platform()}")
    print(f"  python  : {sys.version.split()[0]}; autotx_lib {autotx_version}")
    print(f"  cp      : {tool_version(['cp', '--version'])}")
    print(f"  rsync   : {tool_version(['rsync', '--version'])}")
    print(f"  rclone  : {tool_version(['rclone', 'version'])}")
    print(f"  disk    : {workdir} on {device} ({fstype}, mounted at {point})")
    print(f"  load    : {load()}")


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


# --- the data -----------------------------------------------------------------------


def generate(root: Path, scenario: Scenario) -> None:
    """Write the scenario's files (random bytes: nothing compresses or dedups)."""
    for relpath, size in scenario.files:
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as handle:
            for start in range(0, size, 4 * MiB):
                handle.write(os.urandom(min(4 * MiB, size - start)))


def warm(root: Path) -> None:
    """Read every file under ``root`` so that it sits in the page cache."""
    buf = bytearray(4 * MiB)
    for folder, _, names in os.walk(root):
        for name in names:
            with open(os.path.join(folder, name), "rb", buffering=0) as handle:
                while handle.readinto(buf):
                    pass


def sync() -> None:
    subprocess.run(["sync"], check=True)


# --- the commands -------------------------------------------------------------------


@dataclass
class Command:
    """One contender: ``run`` is timed; ``reset`` restores the start state (untimed)."""

    name: str
    run: Callable[[], None]
    reset: Callable[[], None]


class Trash:
    """Where copies go between commands (see the module docstring: deleting thousands of
    files makes the next command slower on some filesystems); emptied by :meth:`empty`."""

    def __init__(self, folder: Path, keep: bool):
        self.folder, self.keep, self.count = folder, keep, 0

    def put(self, path: Path) -> None:
        if not self.keep:
            shutil.rmtree(path)
            return
        self.folder.mkdir(exist_ok=True)
        self.count += 1
        os.rename(path, self.folder / str(self.count))

    def empty(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def reference_command(name: str, source: Path, dest: Path, trash: Trash) -> Command:
    argv = REFERENCES[name](source, dest)

    def run() -> None:
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
        sync()

    def reset() -> None:
        trash.put(dest)
        sync()

    return Command(name, run, reset)


def autotx_command(workdir: Path, mode: str, trash: Trash) -> Command:
    incoming, managed = workdir / "incoming", workdir / f"managed-{mode}"
    destination = workdir / f"autotx-dest-{mode}"
    (destination / USER).mkdir(parents=True, exist_ok=True)
    cfg = Config(incoming=incoming, managed=managed, destination=destination,
                 readiness={"quiet_seconds": 0},
                 verify={"mode": mode, "algorithm": "xxh3_128"},
                 # the gate is measured by benchmarks/gate.py; here it must not pause
                 gate={"max_cpu_percent": 100, "min_available_memory_mb": 0})
    agent = Agent(cfg)

    def run() -> None:
        summary = agent.run(once=True)
        if not (summary.delivered and summary.ok):
            raise RuntimeError(f"autotx did not deliver: {summary}")

    def reset() -> None:
        done = list((managed / "done" / USER).iterdir())
        if len(done) != 1:
            raise RuntimeError(f"expected one dataset in managed/done/{USER}, found {done}")
        os.rename(done[0], incoming / USER / DATASET)
        trash.put(destination / USER / DATASET)
        sync()

    return Command(f"autotx-{mode}", run, reset)


def make_commands(workdir: Path, source: Path, trash: Trash
                  ) -> tuple[list[Command], list[str]]:
    """autotx and the installed references; also the names of the missing ones."""
    commands, missing = [autotx_command(workdir, mode, trash) for mode in MODES], []
    for name in REFERENCES:
        if shutil.which(name) is None:
            missing.append(name)
        else:
            commands.append(reference_command(name, source, workdir / f"{name}-dest", trash))
    return commands, missing


# --- measuring and reporting ----------------------------------------------------------


def measure(commands: list[Command], source: Path, runs: int) -> dict[str, list[float]]:
    """Interleave the commands over one warm-up round plus ``runs`` timed rounds."""
    times: dict[str, list[float]] = {c.name: [] for c in commands}
    for round_ in range(runs + 1):
        for command in commands:
            warm(source)
            start = time.perf_counter()
            command.run()
            elapsed = time.perf_counter() - start
            command.reset()
            if round_ > 0:
                times[command.name].append(elapsed)
    return times


def report(scenario: Scenario, times: dict[str, list[float]], missing: list[str]) -> None:
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        spread = (max(values) - min(values)) / medians[name] * 100
        print(f"  {name:<14} {medians[name]:8.3f} s  "
              f"{scenario.total_bytes / medians[name] / 1e6:8.1f} MB/s   "
              f"(min {min(values):.3f}, max {max(values):.3f}, spread {spread:.0f}%)")
    for mode in MODES:
        for name, target in TARGETS[(scenario.name, mode)].items():
            label = f"{scenario.name}_{mode}_vs_{name}"
            wanted = "no target" if target is None else f"target >= {target:g}"
            if name in missing:
                print(f"{label}: n/a ({name} not installed: {INSTALL_HINT}) ({wanted})")
                continue
            ratio = medians[name] / medians[f"autotx-{mode}"]
            verdict = "" if target is None else " ok" if ratio >= target else " BELOW TARGET"
            print(f"{label}: {ratio:.2f} ({wanted}){verdict}")


def run_scenario(scenario: Scenario, runs: int, base: Path) -> None:
    workdir = Path(tempfile.mkdtemp(prefix=f"{scenario.name}-", dir=base))
    source = workdir / "incoming" / USER / DATASET
    generate(source, scenario)
    sync()
    trash = Trash(workdir / "trash", keep=len(scenario.files) > MANY_FILES)
    commands, missing = make_commands(workdir, source, trash)
    print(f"\n== {scenario.name}: {scenario.describe()}; {runs} runs after 1 warm-up, "
          f"medians; {load()} ==")
    for name in missing:
        print(f"  {name}: not installed, skipped (install: {INSTALL_HINT})")
    times = measure(commands, source, runs)
    report(scenario, times, missing)
    print(f"  ({load()} at the end)")
    trash.empty()
    shutil.rmtree(workdir)


def check_disk(base: Path) -> None:
    _, _, fstype = mount_of(base)
    if fstype in {"tmpfs", "ramfs", "overlay"}:
        sys.exit(f"{base} is on {fstype}, not a real disk; pass --dir on a local disk")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=None, help="timed rounds (default 5; "
                        "2 with --quick)")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--only", choices=["big", "small"], help="run one scenario")
    parser.add_argument("--dir", type=Path, default=Path("/tmp"),
                        help="where to create the scratch folder (must be a real disk)")
    args = parser.parse_args(argv)
    runs = args.runs or (2 if args.quick else 5)
    check_disk(args.dir)
    base = Path(tempfile.mkdtemp(prefix="autotx-bench-", dir=args.dir))
    try:
        print_header(base)
        for name, scenario in make_scenarios(args.quick).items():
            if args.only in (None, name):
                run_scenario(scenario, runs, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
