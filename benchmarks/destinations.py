"""Throughput of the SMB destination against Samba's own ``smbclient -c 'mput ...'``.

Run from the repository root, as root (it starts a throwaway Samba server on loopback,
installing ``samba`` and ``smbclient`` with apt-get when they are missing)::

    .venv/bin/python benchmarks/destinations.py            # 16 files x 16 MiB, 5 runs
    .venv/bin/python benchmarks/destinations.py --quick    # a smoke run

Method
------
N files of random bytes are generated once in a folder on a real disk; the share is
a folder on the same disk. Per run, each command copies all N files into a fresh folder
of the share:

- ``autotx``: through :class:`~autotx_lib.transfer.destinations.smb.SMBDestination`
  with ``--workers`` threads (the agent's default, 4): each file is hashed (xxh3_128)
  while written, closed (which sends SMB2 FLUSH, so the server writes it to its disk),
  read back from the server and hashed again, the digests compared (the read-back's
  close waits for the FLUSH); then the folder is synced and renamed into place.
- ``smbclient``: ``smbclient //127.0.0.1/data -A AUTHFILE -c 'prompt off; cd DIR;
  lcd SRC; mput *'`` (no read-back, no flush).
- ``smbclient+fsync``: the same, then each copy fsynced on the server's side (timed):
  both copies are on disk when the clock stops (``smb_vs_smbclient_fsync``, for
  information; the issue's target is against plain ``mput``).

The commands alternate (autotx, smbclient, smbclient+fsync, autotx ...) over ``--runs`` rounds after one
untimed warm-up round; after each command its copy is removed and ``sync`` runs outside
the timing. Reported: median seconds and MB/s (10^6 B/s) of each, and
``smb_vs_smbclient: median(smbclient) / median(autotx)``: autotx's throughput relative
to smbclient's, next to the issue's target (>= 0.8). The load average and each client's
median CPU seconds are printed too: on a shared machine the ratio moves with the load.

What autotx does that ``mput`` does not, and pays for in its time: every file is read
back from the server, and flushed to the server's disk (SMB2 FLUSH, so a closed file is
durable); ``mput``'s files are deleted before their data ever reaches the disk.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import xxhash

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from autotx_lib.transfer.destinations import open_destination  # noqa: E402
from tests.transfer.destinations.samba import SambaServer, install_samba  # noqa: E402

MiB = 1024 * 1024
CHUNK = 8 * MiB


def make_files(folder: Path, count: int, size: int) -> list[Path]:
    folder.mkdir(parents=True)
    files = []
    for i in range(count):
        path = folder / f"img_{i:04d}.tif"
        path.write_bytes(os.urandom(size))
        files.append(path)
    return files


def copy_one(dest, src: Path, relpath: str) -> None:
    """Write one file hashing it, read it back from the server, compare (autotx's check)."""
    hasher = xxhash.xxh3_128()
    with open(src, "rb") as source, dest.open_write(relpath) as out:
        while chunk := source.read(CHUNK):
            hasher.update(chunk)
            out.write(chunk)
    again = xxhash.xxh3_128()
    with dest.open_read(relpath) as back:
        while chunk := back.read(CHUNK):
            again.update(chunk)
    if again.digest() != hasher.digest():
        raise SystemExit(f"read-back mismatch for {relpath}")


def run_autotx(dest, files: list[Path], name: str, workers: int) -> tuple[float, float]:
    """Seconds and this process's CPU seconds to deliver ``files`` as the agent does."""
    start, cpu = time.perf_counter(), time.process_time()
    tmp = dest.make_tmp(f".autotx-tmp/{name}")
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda f: copy_one(dest, f, f"{tmp}/{f.name}"), files))
    dest.sync(tmp)  # the agent makes the copy durable before renaming it into place
    dest.rename(tmp, name)
    return time.perf_counter() - start, time.process_time() - cpu


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_smbclient(server: SambaServer, auth: Path, src: Path, name: str,
                  durable: bool = False) -> tuple[float, float]:
    """Seconds and smbclient's CPU seconds to copy the files in ``src`` with mput;
    ``durable``: and to fsync each copy on the server's side afterwards."""
    (server.data / name).mkdir()
    (server.data / name).chmod(0o777)
    start, cpu = time.perf_counter(), _children_cpu()
    subprocess.run(["smbclient", "//127.0.0.1/data", "-p", str(server.port), "-A", str(auth),
                    "-c", f"prompt off; cd {name}; lcd {src}; mput *"],
                   check=True, capture_output=True)
    if durable:
        for path in (server.data / name).iterdir():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    return time.perf_counter() - start, _children_cpu() - cpu


def clean(server: SambaServer, name: str) -> None:
    shutil.rmtree(server.data / name, ignore_errors=True)
    os.sync()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--size-mib", type=int, default=16)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="4 files x 4 MiB, 2 runs")
    args = parser.parse_args()
    if args.quick:
        args.files, args.size_mib, args.runs = 4, 4, 2
    reason = install_samba()
    if reason or os.geteuid() != 0:
        raise SystemExit(f"cannot run: {reason or 'needs root (it starts smbd)'}")
    work = Path(tempfile.mkdtemp(prefix="autotx-bench-smb-", dir="/var/tmp"))
    work.chmod(0o755)
    server = SambaServer(work / "server", small_share=False)
    try:
        server.start()
        files = make_files(work / "src", args.files, args.size_mib * MiB)
        auth = work / "auth.txt"
        auth.write_text(f"username = {server.user}\npassword = {server.password}\n")
        auth.chmod(0o600)
        dest = open_destination(server.url(), {"password_env": "BENCH_SMB_PW"},
                                environ={"BENCH_SMB_PW": server.password})
        commands = ("autotx", "smbclient", "smbclient+fsync")
        times: dict[str, list[float]] = {command: [] for command in commands}
        cpu: dict[str, list[float]] = {command: [] for command in commands}
        load = os.getloadavg()[0]
        for round_ in range(args.runs + 1):
            for command in times:
                name = f"{command}-{round_}"
                if command == "autotx":
                    seconds, cpu_seconds = run_autotx(dest, files, name, args.workers)
                else:
                    seconds, cpu_seconds = run_smbclient(server, auth, work / "src", name,
                                                         durable=command != "smbclient")
                clean(server, name)
                if round_:  # round 0 warms up
                    times[command].append(seconds)
                    cpu[command].append(cpu_seconds)
        dest.close()
    finally:
        server.cleanup()
        shutil.rmtree(work, ignore_errors=True)
    total = args.files * args.size_mib * MiB
    print(f"{args.files} files x {args.size_mib} MiB to SMB on loopback, {args.runs} runs, "
          f"autotx with {args.workers} workers and read-back verification; load average "
          f"{load:.1f} before, {os.getloadavg()[0]:.1f} after ({os.cpu_count()} CPUs)")
    for command, values in times.items():
        median = statistics.median(values)
        spread = (max(values) - min(values)) / median
        print(f"  {command:15s} {median:7.2f} s  {total / median / 1e6:7.1f} MB/s  "
              f"(spread {spread:.0%}; client CPU {statistics.median(cpu[command]):.2f} s)")
    autotx = statistics.median(times["autotx"])
    print(f"smb_vs_smbclient: {statistics.median(times['smbclient']) / autotx:.2f} "
          "(target >= 0.8)")
    print(f"smb_vs_smbclient_fsync: {statistics.median(times['smbclient+fsync']) / autotx:.2f} "
          "(both copies durable when timed; for information)")


if __name__ == "__main__":
    main()
