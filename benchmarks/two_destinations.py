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
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
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


def config_for(work: Path, destinations: int) -> Config:
    folders = [work / f"dest{i}" for i in range(destinations)]
    for folder in folders:
        (folder / "bench").mkdir(parents=True, exist_ok=True)
    return Config(incoming=work / "incoming", managed=work / f"managed{destinations}",
                  destinations=[{"name": f"d{i}", "url": str(f)} for i, f in enumerate(folders)],
                  readiness={"quiet_seconds": 0}, host_alias="bench",
                  gate={"max_cpu_percent": 100, "min_available_memory_mb": 0},
                  email={}, grace_period_days=0)


def one_run(work: Path, pool: Path, config: Config, name: str) -> float:
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
        shutil.rmtree(target.local_path / "bench" / name)
    shutil.rmtree(config.managed / "done", ignore_errors=True)
    os.sync()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--size-mib", type=int, default=128)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="8 files x 16 MiB, 2 runs")
    args = parser.parse_args()
    if args.quick:
        args.size_mib, args.runs = 16, 2
    work = Path(tempfile.mkdtemp(prefix="autotx-bench-2dest-", dir="/var/tmp"))
    try:
        pool = work / "pool"
        make_pool(pool, args.files, args.size_mib * MiB)
        configs = {"one": config_for(work, 1), "two": config_for(work, 2)}
        times: dict[str, list[float]] = {"one": [], "two": []}
        for round_ in range(args.runs + 1):
            for label, config in configs.items():
                seconds = one_run(work, pool, config, f"{label}-{round_}")
                if round_:
                    times[label].append(seconds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    point, device, fstype = mount_of(Path("/var/tmp"))
    total = args.files * args.size_mib * MiB
    print(f"{args.files} files x {args.size_mib} MiB, {args.runs} runs; disk {device} "
          f"({fstype}) at {point}; {os.cpu_count()} cores, {cpu_model()}; "
          f"load {os.getloadavg()[0]:.2f}")
    for label, values in times.items():
        median = statistics.median(values)
        print(f"  {label} destination(s): {median:7.2f} s  {total / median / 1e6:7.1f} MB/s "
              f"of dataset  (runs {', '.join(f'{v:.2f}' for v in values)})")
    ratio = statistics.median(times["two"]) / statistics.median(times["one"])
    print(f"two_vs_one: {ratio:.2f} (target <= 1.3)")


if __name__ == "__main__":
    main()
