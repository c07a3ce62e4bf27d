"""Two local destinations against one: the source is read and hashed once for both.

Run from the repository root::

    .venv/bin/python benchmarks/two_destinations.py            # 8 files x 128 MiB, 5 runs
    .venv/bin/python benchmarks/two_destinations.py --quick    # 8 x 16 MiB, 2 runs

Method
------
N files of random bytes are generated once in a pool on a real disk (``/var/tmp``). Per
run a dataset is made in ``incoming/`` by hard links to the pool (no copy), and the agent
(``Agent(config).run(once=True)``, the default ``storage`` verification: every copy read
back from the disk) delivers it either to one destination or to two destinations
(``[[destinations]]``, both folders on the same disk as the source). The two set-ups
alternate over ``--runs`` rounds after one untimed warm-up; between runs the delivered
copies are removed and ``sync`` runs, outside the timing. Reported: median seconds of
each and ``two_vs_one: median(two) / median(one)`` next to the issue's target (<= 1.3).

The same is measured for ``cp`` (with ``sync`` inside the timing) to one folder and to two:
``cp two_vs_one`` is what the disk itself allows (writing twice the bytes to one disk). When
it is near 2, the disk, not the reading or hashing, sets the pace, and no tool reaches 1.3.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from autotx_lib.config import Config  # noqa: E402
from autotx_lib.transfer.agent import Agent  # noqa: E402
from benchmarks._machine import cpu_model, mount_of  # noqa: E402

MiB = 1024 * 1024


def make_pool(folder: Path, count: int, size: int) -> None:
    folder.mkdir(parents=True)
    for i in range(count):
        (folder / f"img_{i:02d}.tif").write_bytes(os.urandom(size))
    os.sync()


def config_for(work: Path, destinations: int, verify: str) -> Config:
    folders = [work / f"dest{i}" for i in range(destinations)]
    for folder in folders:
        (folder / "bench").mkdir(parents=True, exist_ok=True)
    return Config(incoming=work / "incoming", managed=work / f"managed{destinations}",
                  destinations=[{"name": f"d{i}", "url": str(f)} for i, f in enumerate(folders)],
                  readiness={"quiet_seconds": 0}, host_alias="bench",
                  gate={"max_cpu_percent": 100, "min_available_memory_mb": 0},
                  email={}, grace_period_days=0, verify={"mode": verify})


def one_run(work: Path, pool: Path, config: Config, name: str,
            share_root: Path | None = None) -> float:
    """One timed delivery of a dataset hard-linked from ``pool``; the copies are removed
    afterwards (``share_root``: where an smb:// destination's folder is on this machine)."""
    dataset = config.incoming / "bench" / name
    dataset.mkdir(parents=True)
    for source in pool.iterdir():
        os.link(source, dataset / source.name)
    started = time.perf_counter()
    summary = Agent(config).run(once=True)
    seconds = time.perf_counter() - started
    if len(summary.delivered) != 1:
        raise SystemExit(f"the agent did not deliver: {summary}")
    for target in config.targets:
        shutil.rmtree((target.local_path or share_root) / "bench" / name)
    shutil.rmtree(config.managed / "done", ignore_errors=True)
    os.sync()
    return seconds


def cp_run(pool: Path, work: Path, targets: int, name: str) -> float:
    folders = [work / f"cp{i}" / name for i in range(targets)]
    started = time.perf_counter()
    for folder in folders:
        subprocess.run(["cp", "-r", str(pool), str(folder)], check=True)
    os.sync()
    seconds = time.perf_counter() - started
    for folder in folders:
        shutil.rmtree(folder)
    os.sync()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--size-mib", type=int, default=128)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="8 files x 16 MiB, 2 runs")
    parser.add_argument("--verify", default="storage", choices=["storage", "cache", "stream"],
                        help="the agent's verification mode (default: storage, read back "
                        "from the disk)")
    args = parser.parse_args()
    if args.quick:
        args.size_mib, args.runs = 16, 2
    work = Path(tempfile.mkdtemp(prefix="autotx-bench-2dest-", dir="/var/tmp"))
    try:
        pool = work / "pool"
        make_pool(pool, args.files, args.size_mib * MiB)
        configs = {"one": config_for(work, 1, args.verify),
                   "two": config_for(work, 2, args.verify)}
        times: dict[str, list[float]] = {"one": [], "two": [], "cp one": [], "cp two": []}
        for folder in ("cp0", "cp1"):
            (work / folder).mkdir()
        for round_ in range(args.runs + 1):
            for label, config in configs.items():
                seconds = one_run(work, pool, config, f"{label}-{round_}")
                cp_seconds = cp_run(pool, work, len(config.targets), f"{label}-{round_}")
                if round_:
                    times[label].append(seconds)
                    times[f"cp {label}"].append(cp_seconds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    point, device, fstype = mount_of(Path("/var/tmp"))
    total = args.files * args.size_mib * MiB
    print(f"{args.files} files x {args.size_mib} MiB, {args.runs} runs, verify "
          f"{args.verify}; disk {device} "
          f"({fstype}) at {point}; {os.cpu_count()} cores, {cpu_model()}; "
          f"load {os.getloadavg()[0]:.2f}")
    for label, values in times.items():
        median = statistics.median(values)
        print(f"  {label:6s} destination(s): {median:7.2f} s  {total / median / 1e6:7.1f} MB/s "
              f"of dataset  (runs {', '.join(f'{v:.2f}' for v in values)})")
    ratio = statistics.median(times["two"]) / statistics.median(times["one"])
    floor = statistics.median(times["cp two"]) / statistics.median(times["cp one"])
    print(f"cp two_vs_one (the disk's own ratio): {floor:.2f}")
    print(f"two_vs_one ({args.verify}): {ratio:.2f} (target <= 1.3)")


if __name__ == "__main__":
    main()
