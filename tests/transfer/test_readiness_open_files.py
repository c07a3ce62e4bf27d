"""Open files: seen through symbolic links, the same by /proc and by psutil."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from autotx_lib.config import ReadinessSettings
from autotx_lib.transfer import readiness
from autotx_lib.transfer.readiness import check_ready, open_files_under

from .conftest import make_dataset


@contextmanager
def held_open(path: Path) -> Iterator[subprocess.Popen]:
    """Another process that keeps ``path`` open for appending until the block ends."""
    holder = subprocess.Popen([sys.executable, "-c",
                               f"f = open({str(path)!r}, 'ab'); "
                               "print('open', flush=True); import time; time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        yield holder
    finally:
        holder.kill()
        holder.wait()


def test_file_held_open_behind_a_symbolic_link_means_not_ready(tmp_path):
    """incoming/ reached through a link (/data -> /mnt/disk1): the system names the open
    file by its real path, which the check once compared with the link's path."""
    make_dataset(tmp_path / "disk1", "alice", "exp", {"a.tif": b"x"})
    (tmp_path / "data").symlink_to(tmp_path / "disk1")
    folder = tmp_path / "data" / "alice" / "exp"
    with held_open(folder / "a.tif") as holder:
        result = check_ready(folder, ReadinessSettings(quiet_seconds=0))
        assert not result.ready and "still open" in result.reason
        assert str(holder.pid) in result.reason
    assert check_ready(folder, ReadinessSettings(quiet_seconds=0)).ready


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="no /proc: psutil is the only way")
def test_proc_and_psutil_find_the_same_open_files(tmp_path):
    folder = make_dataset(tmp_path, "alice", "exp", {"a.tif": b"x", "sub/b.tif": b"y"})
    held = os.path.realpath(folder / "sub" / "b.tif")
    prefix = os.path.join(os.path.realpath(folder), "")
    with held_open(folder / "sub" / "b.tif") as holder:
        by_proc = readiness._proc_open_files(prefix)
        assert by_proc == [(holder.pid, held)]
        assert readiness._psutil_open_files(prefix) == by_proc
        name = psutil.Process(holder.pid).name()
        assert open_files_under(folder) == [f"{held} ({name} {holder.pid})"]


def test_a_file_open_elsewhere_does_not_count(tmp_path):
    folder = make_dataset(tmp_path, "alice", "exp", {"a.tif": b"x"})
    neighbour = make_dataset(tmp_path, "alice", "exp2", {"a.tif": b"x"})  # shares the prefix
    with held_open(neighbour / "a.tif"):
        assert open_files_under(folder) == []
        assert len(open_files_under(neighbour)) == 1
