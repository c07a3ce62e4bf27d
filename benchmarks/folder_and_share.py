"""A folder and an SMB share in one round: is the share written alongside the folder?

Run from the repository root, as root (it starts a throwaway Samba server on loopback)::

    .venv/bin/python benchmarks/folder_and_share.py            # 8 files x 32 MiB, 5 runs
    .venv/bin/python benchmarks/folder_and_share.py --quick    # 4 x 8 MiB, 2 runs

Method
------
N files of random bytes are generated once on a real disk (``/var/tmp``). Per run a
dataset is made in ``incoming/`` by hard links and the agent (``Agent.run(once=True)``,
default ``storage`` verification; every SMB copy read back from the server) delivers it
to one of three set-ups, alternating over ``--runs`` rounds after one untimed warm-up:

- ``folder``: one folder destination;
- ``share``: one ``smb://`` destination (the share is the primary, written without a mount);
- ``both``: the folder first and the share as a second ``[[destinations]]`` entry.

Reported: the median seconds of each, ``both_vs_sum = both / (folder + share)`` (1.0: the
share is written after the folder, file by file; lower: the two overlap) and
``both_vs_slower = both / max(folder, share)`` (1.0 would be perfect overlap). The machine's
two cores also run the Samba server, so perfect overlap is not to be expected here.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from autotx_lib.config import Config  # noqa: E402
from benchmarks.two_destinations import make_pool, one_run  # noqa: E402
from tests.transfer.destinations.samba import SambaServer, install_samba  # noqa: E402

MiB = 1024 * 1024
PASSWORD_ENV = "AUTOTX_BENCH_SMB_PASSWORD"


def config_for(work: Path, label: str, share_url: str) -> Config:
    folder = work / f"folder-{label}"
    (folder / "bench").mkdir(parents=True)
    share = {"name": "share", "url": share_url, "password_env": PASSWORD_ENV}
    entries = {"folder": [{"name": "folder", "url": str(folder)}],
               "share": [share],
               "both": [{"name": "folder", "url": str(folder)}, share]}[label]
    return Config(incoming=work / "incoming", managed=work / f"managed-{label}",
                  destinations=entries, readiness={"quiet_seconds": 0}, host_alias="bench",
                  gate={"max_cpu_percent": 100, "min_available_memory_mb": 0},
                  email={}, grace_period_days=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--size-mib", type=int, default=32)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="4 files x 8 MiB, 2 runs")
    args = parser.parse_args()
    if args.quick:
        args.files, args.size_mib, args.runs = 4, 8, 2
    reason = install_samba()
    if reason or os.geteuid() != 0:
        raise SystemExit(f"cannot run: {reason or 'needs root (it starts smbd)'}")
    work = Path(tempfile.mkdtemp(prefix="autotx-bench-mixed-", dir="/var/tmp"))
    work.chmod(0o755)
    server = SambaServer(work / "server", small_share=False)
    times: dict[str, list[float]] = {"folder": [], "share": [], "both": []}
    try:
        server.start()
        os.environ[PASSWORD_ENV] = server.password
        share_root = server.data / "mixed"
        (share_root / "bench").mkdir(parents=True)
        for folder in (share_root, share_root / "bench"):
            folder.chmod(0o777)
        make_pool(work / "pool", args.files, args.size_mib * MiB)
        configs = {label: config_for(work, label, server.url(path="mixed")) for label in times}
        load = os.getloadavg()[0]
        for round_ in range(args.runs + 1):
            for label, config in configs.items():
                seconds = one_run(work, work / "pool", config, f"{label}-{round_}",
                                  share_root)
                if round_:  # round 0 warms up
                    times[label].append(seconds)
    finally:
        server.cleanup()
        shutil.rmtree(work, ignore_errors=True)
    total = args.files * args.size_mib * MiB
    print(f"{args.files} files x {args.size_mib} MiB, {args.runs} runs, storage verification; "
          f"load average {load:.1f} before, {os.getloadavg()[0]:.1f} after "
          f"({os.cpu_count()} CPUs)")
    medians = {label: statistics.median(values) for label, values in times.items()}
    for label, values in times.items():
        print(f"  {label:7s} {medians[label]:7.2f} s  {total / medians[label] / 1e6:7.1f} MB/s "
              f"(runs {', '.join(f'{v:.2f}' for v in values)})")
    print(f"both_vs_sum: {medians['both'] / (medians['folder'] + medians['share']):.2f} "
          "(1.0: one after the other)")
    print(f"both_vs_slower: {medians['both'] / max(medians['folder'], medians['share']):.2f} "
          "(1.0: fully alongside)")


if __name__ == "__main__":
    main()
