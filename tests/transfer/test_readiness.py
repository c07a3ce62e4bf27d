"""Is an acquisition finished? Quiet period over the whole tree, open handles, marker."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from autotx_lib.config import ReadinessSettings
from autotx_lib.transfer.readiness import check_ready, tree_state

from .conftest import make_dataset


def test_recent_change_anywhere_in_the_tree_means_not_ready(tmp_path):
    folder = make_dataset(tmp_path, "alice", "exp", {"a/b/c/deep.tif": b"x", "top.txt": b"y"})
    old = time.time() - 600
    for path in folder.rglob("*"):
        os.utime(path, (old, old))
    settings = ReadinessSettings(quiet_seconds=60, check_open_files=False)
    later = time.time() + 120  # everything, ctime included, is two minutes old by then
    assert check_ready(folder, settings, now=later).ready
    (folder / "a" / "b" / "c" / "deep.tif").write_bytes(b"grown")
    readiness = check_ready(folder, settings, now=time.time() + 5)
    assert not readiness.ready and "waiting for 60 s of quiet" in readiness.reason


def test_preserved_old_mtime_does_not_fool_the_quiet_period(tmp_path):
    """A file copied in with its old mtime (cp -p) still counts as a change (ctime)."""
    folder = make_dataset(tmp_path, "alice", "exp", {"a.tif": b"x"})
    old = time.time() - 3600
    os.utime(folder / "a.tif", (old, old))
    os.utime(folder, (old, old))
    readiness = check_ready(folder, ReadinessSettings(quiet_seconds=60, check_open_files=False))
    assert not readiness.ready


def test_tree_state_counts_files_and_bytes(tmp_path):
    folder = make_dataset(tmp_path, "u", "d", {"a": b"12345", "s/b": b"678"})
    state = tree_state(folder)
    assert (state.files, state.total_bytes) == (2, 8)


def test_marker_file_is_required(tmp_path):
    folder = make_dataset(tmp_path, "alice", "exp", {"a.tif": b"x"})
    settings = ReadinessSettings(quiet_seconds=0, marker_file="done.txt", check_open_files=False)
    readiness = check_ready(folder, settings)
    assert not readiness.ready and "marker file done.txt" in readiness.reason
    (folder / "done.txt").write_text("")
    assert check_ready(folder, settings).ready


def test_file_held_open_by_another_process_means_not_ready(tmp_path):
    folder = make_dataset(tmp_path, "alice", "exp", {"a.tif": b"x"})
    holder = subprocess.Popen([sys.executable, "-c",
                               f"f = open({str(folder / 'a.tif')!r}, 'ab'); "
                               "print('open', flush=True); import time; time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        readiness = check_ready(folder, ReadinessSettings(quiet_seconds=0))
        assert not readiness.ready and "still open" in readiness.reason
        assert str(holder.pid) in readiness.reason
    finally:
        holder.kill()
        holder.wait()
    assert check_ready(folder, ReadinessSettings(quiet_seconds=0)).ready


def test_agent_does_not_rewalk_a_dataset_before_its_quiet_period_can_be_over(facility,
                                                                            monkeypatch):
    """Idle cost: a waiting dataset's tree is walked once, not at every poll."""
    from autotx_lib.transfer import readiness
    from autotx_lib.transfer.agent import Agent

    facility.readiness.quiet_seconds = 3600
    make_dataset(facility.incoming, "alice", "exp", {"a/b.tif": b"x"})
    walks = []
    real = readiness.tree_state
    monkeypatch.setattr(readiness, "tree_state", lambda root: walks.append(root) or real(root))
    agent = Agent(facility)
    for _ in range(3):
        claimed, waiting = agent.scan()
        assert not claimed and "waiting for 3600 s of quiet" in waiting[0]
    assert len(walks) == 1
