"""What the world does to an agent: a second agent, a lost journal, names too long, clocks
ahead, sources changed at the last moment, mounts inside the destination."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from autotx_lib import journal as J
from autotx_lib.config import ReadinessSettings
from autotx_lib.errors import AgentRunningError, JournalBusyError, JournalError
from autotx_lib.journal import Journal
from autotx_lib.transfer.agent import Agent
from autotx_lib.transfer.agent_lock import AgentLock, lock_paths
from autotx_lib.transfer.copy import verify_manifest
from autotx_lib.transfer.readiness import check_ready

from ..conftest import wait_for
from .conftest import make_dataset, tree, write_config

# --- one agent per managed folder and journal -----------------------------------------


def test_a_second_agent_is_refused_while_the_first_holds_the_lock(facility):
    with AgentLock(lock_paths(facility.managed, facility.journal_url)), \
            pytest.raises(AgentRunningError, match=f"pid {os.getpid()}"):
        Agent(facility).run(once=True)
    make_dataset(facility.incoming, "alice", "exp", {"a.txt": b"a"})
    assert Agent(facility).run(once=True).delivered  # the lock was released


def test_second_agent_process_exits_2_naming_the_first_and_no_unclean_report(facility, tmp_path):
    config = write_config(facility, tmp_path / "autotx.toml")
    first = subprocess.Popen([sys.executable, "-m", "autotx_lib.cli", "run", "-c", str(config)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        journal_file = facility.managed / "autotx.sqlite"

        def first_is_idle():
            if not journal_file.exists():
                return False
            row = Journal(facility.journal_url).last_session()
            return row is not None and row.pid == first.pid and row.state == "idle"

        wait_for(first_is_idle, 60, "the first agent to be running and idle")
        second = subprocess.run([sys.executable, "-m", "autotx_lib.cli", "run", "--once", "-c",
                                 str(config)], capture_output=True, text=True)
        assert second.returncode == 2
        assert "already running" in second.stderr and f"pid {first.pid}" in second.stderr
        assert "Traceback" not in second.stderr
        make_dataset(facility.incoming, "alice", "exp", {"a.txt": b"a"})
        wait_for(lambda: (facility.destination / "alice" / "exp").is_dir(), 60,
                 "the first agent to deliver")
    finally:
        first.terminate()
        first.wait(30)
    events = Journal(facility.journal_url).recent_events(200)
    assert not [e for e in events if e.kind == "unclean-shutdown"]
    sessions = Journal(facility.journal_url).last_session()
    assert sessions.clean and sessions.pid == first.pid


def test_kill_9_releases_the_lock_and_the_next_start_reports_it(facility, tmp_path):
    config = write_config(facility, tmp_path / "autotx.toml")
    first = subprocess.Popen([sys.executable, "-m", "autotx_lib.cli", "run", "-c", str(config)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: (facility.managed / "autotx.sqlite").exists() and
             Journal(facility.journal_url).last_session() is not None, 60,
             "the first agent to open a session")
    first.kill()
    first.wait(30)
    Agent(facility).run(once=True)
    kinds = [e.kind for e in Journal(facility.journal_url).recent_events(50)]
    assert "unclean-shutdown" in kinds


# --- the journal lost, locked, damaged, or readable by others --------------------------


def test_datasets_in_processing_unknown_to_the_journal_are_adopted_and_delivered(facility):
    files = {"a.tif": os.urandom(3000), "sub/b.txt": b"b"}
    processing = facility.managed / "processing" / "2026-11-30_10-00-00__alice__run7"
    make_dataset(processing.parent, processing.name, "", {})  # the folder itself
    for relpath, content in files.items():
        (processing / relpath).parent.mkdir(parents=True, exist_ok=True)
        (processing / relpath).write_bytes(content)
    stale_tmp = facility.destination / ".autotx-tmp" / "alice" / "2026-11-30_10-00-00__run7"
    stale_tmp.mkdir(parents=True)
    (stale_tmp / "a.tif").write_bytes(b"half")
    (stale_tmp / "leftover.bin").write_bytes(b"from an older copy")
    stranger = facility.managed / "processing" / "dropped-by-hand"
    stranger.mkdir()

    summary = Agent(facility).run(once=True)

    assert len(summary.delivered) == 1
    delivered = facility.destination / "alice" / "run7"
    assert tree(delivered) == files, "stale tmp content delivered"
    assert verify_manifest(delivered, next(delivered.glob("autotx-manifest.*")), "xxh3_128") == []
    journal = Journal(facility.journal_url)
    events = {e.kind: e.message for e in journal.recent_events(100)}
    assert "adopted" in events and "alice/run7" in events["adopted"]
    assert "orphan" in events and "dropped-by-hand" in events["orphan"]
    assert stranger.is_dir(), "a folder the agent did not make must be left alone"


def test_adopted_datasets_are_mailed_to_the_admin(facility, admin_mail):
    processing = facility.managed / "processing" / "2026-11-30_10-00-00__alice__run8"
    processing.mkdir(parents=True)
    (processing / "x.bin").write_bytes(b"x")
    Agent(facility).run(once=True)
    subjects = [m["Subject"] for m in admin_mail.to("admin@example.org")]
    assert any("adopted from processing" in s for s in subjects), subjects


def test_journal_deleted_under_a_running_agent_stops_it_with_the_reason(facility):
    facility.poll_seconds = 0.05
    agent = Agent(facility)
    outcome: dict = {}

    def run():
        try:
            agent.run()
        except BaseException as error:  # noqa: BLE001 - handed to the test
            outcome["error"] = error

    thread = threading.Thread(target=run)
    thread.start()
    wait_for(lambda: agent.journal.last_session() is not None, 60, "the agent to start")
    (facility.managed / "autotx.sqlite").unlink()
    thread.join(30)
    assert not thread.is_alive(), "the agent went on with a deleted journal"
    agent.stop()
    assert isinstance(outcome.get("error"), JournalError)
    assert "deleted or replaced" in str(outcome["error"])


def test_a_damaged_journal_gives_one_clear_line(facility, tmp_path):
    config = write_config(facility, tmp_path / "autotx.toml")
    facility.managed.mkdir(parents=True)
    (facility.managed / "autotx.sqlite").write_bytes(b"this is not a database" * 100)
    for command in (["status"], ["run", "--once"]):
        result = subprocess.run([sys.executable, "-m", "autotx_lib.cli", *command, "-c",
                                 str(config)], capture_output=True, text=True)
        assert result.returncode == 2, result.stderr
        assert "damaged" in result.stderr and "Move it aside" in result.stderr
        assert "Traceback" not in result.stderr


def test_a_journal_locked_by_another_process_raises_a_clear_error(facility):
    Journal(facility.journal_url).log("info", "note", "before")
    holder = sqlite3.connect(facility.managed / "autotx.sqlite", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        # the agent waits 30 s; a short wait here takes the same path (SQLite's BUSY code)
        with pytest.raises(JournalBusyError, match="locked by another process"):
            Journal(facility.journal_url, busy_timeout_s=0.2).log("info", "note", "blocked")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    Journal(facility.journal_url, busy_timeout_s=0.2).log("info", "note", "free again")


def test_a_new_journal_and_its_wal_are_readable_by_the_owner_only(facility):
    make_dataset(facility.incoming, "alice", "exp", {"a.txt": b"a"})
    Agent(facility).run(once=True)
    for name in ("autotx.sqlite", "autotx.sqlite-wal"):
        path = facility.managed / name
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, name


def test_an_existing_world_readable_journal_is_tightened_at_start(facility):
    Journal(facility.journal_url).close()
    path = facility.managed / "autotx.sqlite"
    path.chmod(0o644)
    Agent(facility).run(once=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# --- sources, names and folders ---------------------------------------------------------


def test_a_source_changed_after_verification_is_copied_again_before_delivery(facility):
    files = {"a.tif": os.urandom(4000), "b.tif": os.urandom(4000)}
    make_dataset(facility.incoming, "alice", "exp", files)
    changed = {}

    def change_once_all_verified(progress):
        if progress.files_done == progress.files_total and not changed:
            source = next((facility.managed / "processing").iterdir()) / "a.tif"
            source.write_bytes(b"new content after verification")
            os.utime(source, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
            changed["done"] = True

    summary = Agent(facility, on_progress=change_once_all_verified).run(once=True)

    assert changed and summary.delivered
    delivered = facility.destination / "alice" / "exp"
    assert (delivered / "a.tif").read_bytes() == b"new content after verification"
    assert verify_manifest(delivered, delivered / "autotx-manifest.xxh128", "xxh3_128") == []
    kinds = [e.kind for e in Journal(facility.journal_url).recent_events(50)]
    assert "source-changed" in kinds


def test_a_dataset_name_of_255_bytes_is_delivered_under_its_own_name(facility):
    name = "é" * 127  # 254 bytes: fits a file name, not <stamp>__<user>__<name>
    make_dataset(facility.incoming, "alice", name, {"a.txt": b"a"})

    summary = Agent(facility).run(once=True)

    assert summary.delivered, Journal(facility.journal_url).recent_events(5)
    assert tree(facility.destination / "alice" / name) == {"a.txt": b"a"}
    done = list((facility.managed / "done" / "alice").iterdir())
    assert len(done) == 1 and len(done[0].name.encode()) <= 255
    assert Journal(facility.journal_url).dataset(summary.delivered[0]).name == name


def test_an_unreadable_sub_folder_is_quarantined_at_once_like_an_unreadable_file(facility,
                                                                                 tmp_path):
    runner = []
    if os.geteuid() == 0:  # root reads everything: drop the capabilities that allow it
        runner = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
    folder = make_dataset(facility.incoming, "alice", "exp", {"ok.txt": b"ok",
                                                               "locked/x.tif": b"secret"})
    os.chmod(folder / "locked", 0o000)
    config = write_config(facility, tmp_path / "autotx.toml")
    try:
        result = subprocess.run([*runner, sys.executable, "-m", "autotx_lib.cli", "run",
                                 "--once", "-c", str(config)], capture_output=True, text=True)
    finally:
        for locked in facility.managed.rglob("locked"):
            locked.chmod(0o700)
        (folder / "locked").chmod(0o700) if (folder / "locked").exists() else None
    assert result.returncode == 1, result.stderr
    assert "cannot read" in result.stderr and "locked" in result.stderr
    quarantined = list((facility.managed / "error" / "alice").glob("*__exp"))
    assert len(quarantined) == 1
    assert (quarantined[0] / "locked" / "x.tif").read_bytes() == b"secret"


def test_a_user_folder_named_like_the_tmp_area_is_not_a_user(facility):
    make_dataset(facility.incoming, ".autotx-tmp", "exp", {"a.txt": b"a"})
    summary = Agent(facility).run(once=True)
    assert not summary.delivered and not summary.unmatched
    assert (facility.incoming / ".autotx-tmp" / "exp" / "a.txt").exists()
    strays = [e.message for e in Journal(facility.journal_url).recent_events(20)
              if e.kind == "stray"]
    assert any(".autotx-tmp" in m and "cannot start with" in m for m in strays)


def test_user_folder_on_another_filesystem_waits_is_reported_once_and_not_resealed(
        facility, mount_tmpfs, admin_mail):
    mount_tmpfs(facility.destination / "alice", "4m")
    make_dataset(facility.incoming, "alice", "exp", {"a.txt": b"a"})

    for _ in range(3):
        summary = Agent(facility).run(once=True)

    assert summary.retrying and not summary.delivered
    row = Journal(facility.journal_url).dataset(summary.retrying[0])
    assert row.state == J.DELIVERING and "another filesystem" in row.error
    tmp = Path(row.tmp_path)
    assert tree(tmp) == {"a.txt": b"a"} and len(list(tmp.glob("autotx-manifest*"))) == 1
    events = [e for e in Journal(facility.journal_url).recent_events(100)
              if e.kind == "needs-admin"]
    assert len(events) == 1
    problems = [m for m in admin_mail.to("admin@example.org")
                if "cannot take data" in m["Subject"]]
    assert len(problems) == 1


# --- readiness with a clock that is wrong ---------------------------------------------------


def test_future_file_times_are_not_trusted_quiet_is_measured_by_the_agents_clock(tmp_path):
    folder = make_dataset(tmp_path, "alice", "exp", {"a.txt": b"a"})
    year_ahead = time.time() + 365 * 86400
    os.utime(folder / "a.txt", (year_ahead, year_ahead))
    settings = ReadinessSettings(quiet_seconds=60, check_open_files=False)
    now = time.time()

    first = check_ready(folder, settings, now=now)
    assert not first.ready and "future" in first.reason and first.clock_skew > 86400
    later = check_ready(folder, settings, now=now + 61,
                        seen=(first.state, first.unchanged_since))
    assert later.ready
    (folder / "b.txt").write_bytes(b"b")  # a change restarts the agent's own count
    changed = check_ready(folder, settings, now=now + 62,
                          seen=(later.state, later.unchanged_since))
    assert not changed.ready and changed.unchanged_since == now + 62
