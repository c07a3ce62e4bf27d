"""Instrument sessions: start, end, conflicts, idle timeout, login, restart; live sync;
the usage report."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections import namedtuple

import pytest

from autotx_lib.errors import SessionError
from autotx_lib.journal import Journal
from autotx_lib.journal.instrument_sessions import SessionStore
from autotx_lib.transfer.agent import Agent
from autotx_lib.transfer.copy import verify_manifest
from autotx_lib.transfer.live_sync import staging_root
from autotx_lib.transfer.sessions import (
    LoginFollower,
    close_if_idle,
    current_session,
    end_session,
    start_session,
)
from autotx_lib.transfer.status import status
from autotx_lib.transfer.usage import usage

from .conftest import make_dataset, tree, write_config


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autotx_lib.cli", *args], capture_output=True,
                          text=True)


# --- sessions ---------------------------------------------------------------------------------


def test_start_and_end_from_the_command_line(facility, tmp_path):
    config = str(write_config(facility, tmp_path / "autotx.toml"))
    started = cli("session", "start", "-c", config, "--user", "alice", "--project", "P-17")
    assert started.returncode == 0 and "session 1 of alice, project P-17" in started.stdout
    assert cli("session", "status", "-c", config).returncode == 0
    ended = cli("session", "end", "-c", config, "--note", "done for today")
    assert ended.returncode == 0 and "(user)" in ended.stdout
    assert cli("session", "status", "-c", config).returncode == 1
    again = cli("session", "end", "-c", config)
    assert again.returncode == 2 and "no session is open" in again.stderr


@pytest.mark.parametrize(("user", "message"), [("", "give the user"),
                                               ("mallory", "unknown user"),
                                               ("../alice", "cannot be a user name")])
def test_start_refuses_missing_unknown_and_unsafe_users(facility, user, message):
    with pytest.raises(SessionError, match=message):
        start_session(facility, user)


def test_a_second_start_ends_the_first_or_is_refused(facility):
    (facility.destination / "bob").mkdir()
    first = start_session(facility, "alice")
    second = start_session(facility, "bob")
    store = SessionStore(Journal(facility.journal_url))
    assert store.session(first.id).end_reason == "replaced" and second.open
    facility.sessions.on_conflict = "refuse"
    with pytest.raises(SessionError, match="bob's session .* is still open"):
        start_session(facility, "alice")


def test_two_terminals_starting_at_once_open_exactly_one_session(facility, tmp_path):
    config = write_config(facility, tmp_path / "autotx.toml",
                          extra="").read_text() + '[sessions]\non_conflict = "refuse"\n'
    (tmp_path / "autotx.toml").write_text(config)
    Journal(facility.journal_url).close()
    command = [sys.executable, "-m", "autotx_lib.cli", "session", "start", "-c",
               str(tmp_path / "autotx.toml"), "--user", "alice"]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    codes = [p.wait(60) for p in procs]
    assert sorted(codes) == [0, 2, 2, 2], [p.stderr.read() for p in procs]
    rows = SessionStore(Journal(facility.journal_url)).recent()
    assert len([r for r in rows if r.ended_at is None]) == 1


def test_an_idle_session_is_closed_at_its_last_activity_plus_the_timeout(facility):
    session = start_session(facility, "alice")
    journal = Journal(facility.journal_url)
    facility.sessions.idle_timeout_minutes = 30
    assert close_if_idle(facility, journal, now=session.started_at +
                         dt.timedelta(minutes=29)) is None
    closed = close_if_idle(facility, journal, now=session.started_at + dt.timedelta(hours=5))
    assert closed.end_reason == "timeout"
    assert closed.ended_at == session.last_activity_at + dt.timedelta(minutes=30)


def test_an_agent_restart_keeps_the_session_open(facility):
    session = start_session(facility, "alice")
    Agent(facility).run(once=True)
    Agent(facility).run(once=True)
    assert current_session(facility).id == session.id


def test_a_clock_set_back_never_gives_a_negative_duration(facility):
    session = start_session(facility, "alice")
    ended = end_session(facility, when=session.started_at - dt.timedelta(hours=1))
    assert ended.duration() == dt.timedelta(0)


User = namedtuple("User", "name terminal host started pid")


def test_console_login_starts_and_logout_ends_a_session_ignoring_flapping(facility):
    facility.sessions.login_debounce_seconds = 10
    logged_in: list = []
    clock = [0.0]
    follower = LoginFollower(facility, users=lambda: list(logged_in), clock=lambda: clock[0])
    logged_in.append(User("alice", "tty1", None, 0.0, 1))
    assert follower.poll() is None  # not held long enough yet
    clock[0] = 5
    logged_in.clear()  # flaps out ...
    assert follower.poll() is None
    clock[0] = 7
    logged_in.append(User("alice", "tty1", None, 0.0, 1))  # ... and back in
    assert follower.poll() is None and current_session(facility) is None
    clock[0] = 18
    assert follower.poll() == "started" and current_session(facility).user == "alice"
    assert current_session(facility).started_by == "login"
    logged_in.clear()
    clock[0] = 19
    assert follower.poll() is None
    clock[0] = 30
    assert follower.poll() == "ended" and current_session(facility) is None
    ssh = User("alice", "pts/0", "10.1.2.3", 0.0, 2)  # a remote login is no console user
    logged_in.append(ssh)
    clock[0] = 50
    follower.poll()
    clock[0] = 70
    assert follower.poll() is None and current_session(facility) is None


# --- live sync --------------------------------------------------------------------------------


def _live(facility):
    facility.sessions.live_sync = True
    facility.sessions.live_quiet_seconds = 0
    return facility


def test_live_sync_copies_during_the_session_and_the_end_delivers_what_changed(facility):
    _live(facility)
    files = {"img_000.tif": os.urandom(20_000), "img_001.tif": os.urandom(20_000),
             "meta/notes.txt": b"v1"}
    folder = make_dataset(facility.incoming, "alice", "run1", files)
    session = start_session(facility, "alice")

    Agent(facility).run(once=True)

    staged = staging_root(facility, session.id) / "run1"
    assert tree(staged) == files, "not synced during the session"
    assert (folder / "img_000.tif").exists(), "claimed while the session is open"
    waiting = {w.name: w.reason for w in status(facility).waiting}
    assert "session is open" in waiting["run1"]

    (folder / "meta" / "notes.txt").write_bytes(b"v2, changed after it was synced")
    os.utime(folder / "img_001.tif")  # touched, same content: not copied again
    (folder / "img_000.tif").unlink()  # deleted after it was synced
    (folder / "late.tif").write_bytes(b"late")
    Agent(facility).run(once=True)
    rows = SessionStore(Journal(facility.journal_url)).live_files(session.id)
    assert rows["run1/meta/notes.txt"].copies == 2 and rows["run1/img_001.tif"].copies == 1

    end_session(facility)
    summary = Agent(facility).run(once=True)

    assert len(summary.delivered) == 1
    delivered = facility.destination / "alice" / "run1"
    expected = {"img_001.tif": files["img_001.tif"], "late.tif": b"late",
                "meta/notes.txt": b"v2, changed after it was synced"}
    assert tree(delivered) == expected
    assert verify_manifest(delivered, delivered / "autotx-manifest.xxh128", "xxh3_128") == []
    events = [e for e in Journal(facility.journal_url).recent_events(50)
              if e.kind == "live-synced"]
    assert events and "3 file(s)" in events[0].message
    assert not any(p.is_file() for p in staged.rglob("*")), "staged copies left behind"


def test_a_file_truncated_after_it_was_synced_is_copied_again_at_the_end(facility):
    _live(facility)
    folder = make_dataset(facility.incoming, "alice", "run2", {"a.raw": os.urandom(50_000)})
    start_session(facility, "alice")
    Agent(facility).run(once=True)
    with open(folder / "a.raw", "r+b") as handle:
        handle.truncate(1000)
    facility.sessions.live_quiet_seconds = 3600  # too fresh to be synced again now
    end_session(facility)
    Agent(facility).run(once=True)
    delivered = facility.destination / "alice" / "run2" / "a.raw"
    [original] = (facility.managed / "done" / "alice").glob("*__run2")
    assert delivered.stat().st_size == 1000
    assert delivered.read_bytes() == (original / "a.raw").read_bytes()


def test_the_destination_gone_during_a_session_postpones_live_sync(facility):
    _live(facility)
    make_dataset(facility.incoming, "alice", "run3", {"a.tif": b"a" * 1000})
    session = start_session(facility, "alice")
    os.rename(facility.destination, facility.destination.with_name("away"))
    Agent(facility).run(once=True)  # no crash, nothing synced, nothing written
    assert SessionStore(Journal(facility.journal_url)).live_files(session.id) == {}
    assert not facility.destination.exists(), "live sync wrote where the share should be"
    os.rename(facility.destination.with_name("away"), facility.destination)
    Agent(facility).run(once=True)
    assert "run3/a.tif" in SessionStore(Journal(facility.journal_url)).live_files(session.id)


def test_a_crash_between_staging_and_recording_loses_nothing(facility, monkeypatch):
    _live(facility)
    files = {"a.tif": os.urandom(4000), "b.tif": os.urandom(4000)}
    make_dataset(facility.incoming, "alice", "run4", files)
    start_session(facility, "alice")
    original = SessionStore.record_synced
    calls = {"n": 0}

    def crash_once(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("power cut")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SessionStore, "record_synced", crash_once)
    with pytest.raises(KeyboardInterrupt):
        Agent(facility).run(once=True)
    monkeypatch.setattr(SessionStore, "record_synced", original)
    Agent(facility).run(once=True)
    end_session(facility)
    assert Agent(facility).run(once=True).delivered
    assert tree(facility.destination / "alice" / "run4") == files
    assert len(list((facility.destination / "alice").iterdir())) == 1


# --- usage ------------------------------------------------------------------------------------


def _session(store, user, start, end, project=None, instrument="test-pc"):
    session_id = store.add(instrument=instrument, user=user, project=project, started_by="test",
                           started_at=start, last_activity_at=start)
    store.end(session_id, "user", end)


def test_usage_cuts_sessions_at_month_boundaries_and_never_double_counts(facility):
    store = SessionStore(Journal(facility.journal_url))
    t = dt.datetime
    _session(store, "alice", t(2026, 10, 31, 22), t(2026, 11, 1, 2), "P1")  # 2 h in November
    _session(store, "alice", t(2026, 11, 3, 9), t(2026, 11, 3, 12), "P1")   # 3 h
    _session(store, "alice", t(2026, 11, 3, 11), t(2026, 11, 3, 13), "P2")  # overlaps 1 h
    _session(store, "bob", t(2026, 11, 30, 23), t(2026, 12, 1, 1), "P2")    # 1 h, midnight
    by_user = usage(facility, month="2026-11", by="user").set_index("user")
    assert by_user.loc["alice", "hours"] == pytest.approx(2 + 4)  # 9-13 counted once
    assert by_user.loc["alice", "sessions"] == 3
    assert by_user.loc["bob", "hours"] == pytest.approx(1)
    by_project = usage(facility, month="2026-11", by="project").set_index("project")
    assert by_project.loc["P1", "hours"] == pytest.approx(5)
    assert by_project.loc["P2", "hours"] == pytest.approx(3)
    december = usage(facility, month="2026-12", by="instrument")
    assert list(december["hours"]) == [pytest.approx(1)]


def test_usage_counts_the_data_delivered_during_sessions(facility):
    session = start_session(facility, "alice")
    make_dataset(facility.incoming, "alice", "run5", {"a.tif": b"x" * 5000})
    Agent(facility).run(once=True)
    end_session(facility)
    month = f"{session.started_at:%Y-%m}"
    frame = usage(facility, month=month).set_index("user")
    assert frame.loc["alice", "datasets"] == 1 and frame.loc["alice", "bytes"] == 5000


def test_usage_command_writes_csv_and_xlsx_and_refuses_a_bad_month(facility, tmp_path):
    store = SessionStore(Journal(facility.journal_url))
    _session(store, "alice", dt.datetime(2026, 11, 2, 8), dt.datetime(2026, 11, 2, 10))
    config = str(write_config(facility, tmp_path / "autotx.toml"))
    result = cli("usage", "-c", config, "--month", "2026-11", "--csv", str(tmp_path / "u.csv"),
                 "--xlsx", str(tmp_path / "u.xlsx"))
    assert result.returncode == 0, result.stderr
    assert "alice" in result.stdout and "2.00" in result.stdout
    assert (tmp_path / "u.csv").read_text().splitlines()[1].startswith("alice,2.0,1")
    import openpyxl

    sheet = openpyxl.load_workbook(tmp_path / "u.xlsx").active
    assert sheet["A2"].value == "alice" and sheet["B2"].value == 2.0
    bad = cli("usage", "-c", config, "--month", "November")
    assert bad.returncode == 2 and "YYYY-MM" in bad.stderr and "Traceback" not in bad.stderr


# --- found by benchmarks/sessions.py's author (failing: fixes described in the report) ----------


def test_a_dataset_deleted_during_the_session_leaves_no_staged_copies(facility):
    _live(facility)
    make_dataset(facility.incoming, "alice", "keep", {"a.tif": os.urandom(1000)})
    trial = make_dataset(facility.incoming, "alice", "trial", {"b.tif": os.urandom(1000)})
    session = start_session(facility, "alice")
    Agent(facility).run(once=True)
    staged = staging_root(facility, session.id)
    assert (staged / "trial" / "b.tif").is_file()
    for path in trial.iterdir():  # a trial acquisition thrown away during the session
        path.unlink()
    trial.rmdir()
    Agent(facility).run(once=True)
    end_session(facility)
    assert Agent(facility).run(once=True).delivered
    assert not any(p.is_file() for p in staged.rglob("*")), \
        "the staged copy of a deleted dataset stays at the destination for ever"
    assert SessionStore(Journal(facility.journal_url)).live_files(session.id) == {}


def test_a_file_rewritten_with_its_old_time_after_it_was_synced_is_delivered_as_it_is(facility):
    _live(facility)
    folder = make_dataset(facility.incoming, "alice", "run6", {"a.raw": b"old" * 1000})
    start_session(facility, "alice")
    Agent(facility).run(once=True)
    before = (folder / "a.raw").stat()
    (folder / "a.raw").write_bytes(b"new" * 1000)  # same size, then the acquisition's time
    os.utime(folder / "a.raw", ns=(before.st_atime_ns, before.st_mtime_ns))  # (its ctime moves)
    end_session(facility)
    assert Agent(facility).run(once=True).delivered
    delivered = facility.destination / "alice" / "run6"
    assert (delivered / "a.raw").read_bytes() == b"new" * 1000, "the stale staged copy was delivered"


def test_the_end_of_a_session_makes_its_unchanged_datasets_ready_at_once(facility):
    """The user said they are done: no quiet period for what did not change since."""
    _live(facility)
    facility.readiness.quiet_seconds = 3600
    make_dataset(facility.incoming, "alice", "run6", {"a.tif": os.urandom(4000)})
    start_session(facility, "alice")
    Agent(facility).run(once=True)  # synced live, not claimed
    end_session(facility)
    make_dataset(facility.incoming, "alice", "after_the_end", {"b.tif": b"b"})

    summary = Agent(facility).run(once=True)

    assert len(summary.delivered) == 1
    assert (facility.destination / "alice" / "run6" / "a.tif").exists()
    waiting = {w.name: w.reason for w in status(facility).waiting}
    assert "quiet" in waiting["after_the_end"]


def test_live_sync_walks_the_folder_at_most_twice_per_quiet_period(facility):
    """A pass over thousands of files is not free: no more often than quiet/2."""
    from autotx_lib.transfer.live_sync import LiveSync

    _live(facility)
    facility.sessions.live_quiet_seconds = 60
    make_dataset(facility.incoming, "alice", "run7", {f"f{i}.tif": b"x" for i in range(5)})
    session = start_session(facility, "alice")
    sync = LiveSync(facility, Journal(facility.journal_url), session.id)
    assert sync.step(session).seen_files == 5
    assert sync.step(session).seen_files == 0  # walked 0 s ago: nothing can be quiet yet
    sync._walked_at -= 31  # half the quiet period later
    assert sync.step(session).seen_files == 5
