"""`autotx verify` (hash a delivered dataset again) against `xxhsum -c` on its manifest.

Run from the repository root::

    .venv/bin/python benchmarks/verify.py              # 1 GiB in 8 files, 5 runs
    .venv/bin/python benchmarks/verify.py --mib 256 --runs 3

Method: one dataset of ``--files`` random files (``--mib`` MiB in all) is delivered by the
real agent to a destination on this disk. Then, interleaved over ``--runs`` rounds after an
untimed warm-up (page cache warm for both), ``recheck_delivered(config)`` (what
``autotx verify`` runs: journal rows, manifest, listing, every file hashed) and
``xxhsum -c autotx-manifest.xxh128`` in the delivered folder are timed. Printed: the
medians and ``verify_vs_xxhsum: ratio`` = median(xxhsum) / median(autotx), the target
of issue 13 beside it.
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._machine import cpu_model  # noqa: E402

TARGET = 0.8


def _facility(root: Path, files: int, mib: int):
    from autotx_lib.config import Config
    from autotx_lib.transfer.agent import Agent

    config = Config(incoming=root / "incoming", managed=root / "managed",
                    destination=root / "storage", readiness={"quiet_seconds": 0},
                    verify={"mode": "cache"}, host_alias="bench",
                    gate={"max_cpu_percent": 100, "min_available_memory_mb": 0})
    (config.destination / "bench").mkdir(parents=True)
    dataset = config.incoming / "bench" / "dataset"
    dataset.mkdir(parents=True)
    size = mib * 1024 * 1024 // files
    block = os.urandom(1024 * 1024)
    for index in range(files):
        with open(dataset / f"file_{index:03d}.raw", "wb") as handle:
            for _ in range(size // len(block)):
                handle.write(block if index % 2 else os.urandom(len(block)))
    summary = Agent(config).run(once=True)
    if not summary.delivered:
        raise SystemExit(f"the dataset was not delivered: {summary}")
    return config, config.destination / "bench" / "dataset"


def _time(command) -> float:
    start = time.perf_counter()
    command()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None, help="where to build (a real disk)")
    args = parser.parse_args()
    if shutil.which("xxhsum") is None:
        print("NOT MEASURED: xxhsum is not installed (apt-get install xxhash)")
        return 0
    from autotx_lib.transfer.recheck import recheck_delivered

    root = Path(tempfile.mkdtemp(prefix="autotx-verify-", dir=args.dir))
    try:
        config, delivered = _facility(root, args.files, args.mib)
        print(f"verify benchmark: {args.files} files, {args.mib} MiB; {cpu_model()}; "
              f"load {os.getloadavg()[0]:.1f}")

        def autotx() -> None:
            report = recheck_delivered(config)
            assert report.ok, report.failed

        def xxhsum() -> None:
            subprocess.run(["xxhsum", "-q", "-c", "autotx-manifest.xxh128"], cwd=delivered,
                           check=True, capture_output=True)

        autotx(), xxhsum()  # warm-up: both read from the page cache
        times: dict[str, list[float]] = {"autotx": [], "xxhsum": []}
        for _ in range(args.runs):
            times["autotx"].append(_time(autotx))
            times["xxhsum"].append(_time(xxhsum))
        medians = {name: statistics.median(values) for name, values in times.items()}
        mb = args.mib * 1024 * 1024 / 1e6
        for name, median in medians.items():
            print(f"  {name:7s} {median:6.3f} s ({mb / median:7.0f} MB/s)")
        ratio = medians["xxhsum"] / medians["autotx"]
        verdict = "ok" if ratio >= TARGET else "BELOW TARGET"
        print(f"verify_vs_xxhsum: {ratio:.2f} (target >= {TARGET}) {verdict}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
