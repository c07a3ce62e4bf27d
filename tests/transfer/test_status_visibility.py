"""What `autotx status` and the faces see: bytes inside a large file, a live rate, every
folder that waits (and for what), a pause, unmatched datasets with their size."""

from __future__ import annotations

import datetime as dt
import os
import threading

from autotx_lib.transfer.agent import Agent
from autotx_lib.transfer.status import status

from ..conftest import wait_for
from .conftest import make_dataset


def run_in_thread(agent: Agent) -> threading.Thread:
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    return thread


def test_progress_rate_and_eta_are_visible_inside_one_large_file(facility):
    facility.gate.bandwidth_mb_s = 6  # 24 MB take about 4 s: time to watch it
    facility.poll_seconds = 0.1
    size = 24_000_000
    make_dataset(facility.incoming, "alice", "big", {"one.czi": os.urandom(size)})
    agent = Agent(facility)
    thread = run_in_thread(agent)
    try:
        def mid_file():
            current = status(facility).current
            if current is not None and 0 < current.copied_bytes < size and \
                    current.rate_bytes_per_s and current.copied_files == 0:
                return current
            return None

        current = wait_for(mid_file, 60, "progress inside the file, with a rate")
        assert current.eta_seconds is not None and current.eta_seconds > 0
        assert 1e6 < current.rate_bytes_per_s < 30e6  # around the 6 MB/s cap, not a mean
        data = status(facility).to_dict()["current"]
        assert data["copied_bytes"] > 0 and data["rate_bytes_per_s"] is not None
        assert data["started_at"].endswith("+00:00"), "JSON times carry their zone"
    finally:
        agent.stop()
        thread.join(60)


def test_every_waiting_folder_is_listed_with_its_reason_and_until_when(facility):
    facility.readiness.marker_file = "acquisition.done"
    make_dataset(facility.incoming, "alice", "no-marker", {"a.txt": b"a"})
    Agent(facility).run(once=True)
    waiting = {w.name: w for w in status(facility).waiting}
    assert "marker file acquisition.done" in waiting["no-marker"].reason

    facility.readiness.marker_file = None
    facility.readiness.quiet_seconds = 3600
    make_dataset(facility.incoming, "alice", "fresh", {"b.txt": b"b"})
    Agent(facility).run(once=True)
    waiting = {w.name: w for w in status(facility).waiting}
    assert "quiet" in waiting["fresh"].reason and waiting["fresh"].until is not None
    assert list(status(facility).waiting_df()["name"]) == sorted(waiting)


def test_outside_the_time_window_status_says_paused_with_the_reason(facility):
    opens = dt.datetime.now() + dt.timedelta(hours=3)  # a one-minute window, hours away
    closes = opens + dt.timedelta(minutes=1)
    facility.gate.time_windows = [f"Mon-Sun {opens:%H:%M}-{closes:%H:%M}"]
    facility.poll_seconds = 0.1
    make_dataset(facility.incoming, "alice", "exp", {"a.txt": b"a"})
    agent = Agent(facility)
    thread = run_in_thread(agent)
    try:
        snapshot = wait_for(lambda: (s := status(facility)).agent_state == "paused" and s,
                            60, "the agent to report the pause")
        assert "time window" in snapshot.agent_detail
        assert snapshot.queue and snapshot.queue[0].name == "exp"
    finally:
        agent.stop()
        thread.join(60)


def test_unmatched_datasets_are_listed_with_their_files_and_size(facility):
    make_dataset(facility.incoming, "bob", "exp", {"a.bin": b"x" * 1000, "b.bin": b"y" * 24})
    Agent(facility).run(once=True)
    unmatched = [d for d in status(facility).history if d.state == "unmatched"]
    assert unmatched and (unmatched[0].total_files, unmatched[0].total_bytes) == (2, 1024)


def test_status_before_the_first_run_says_never_started_and_creates_nothing(facility):
    snapshot = status(facility)
    assert snapshot.agent_state == "never started" and "no journal yet" in snapshot.agent_detail
    assert not facility.managed.exists()
