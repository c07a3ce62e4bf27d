"""Agents reporting to a real hub: exactly once through outages and kills, commands."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import func, select

from autotx_lib import journal as J
from autotx_lib.config import Config
from autotx_lib.hub import store as S
from autotx_lib.hub.client import HubClient
from autotx_lib.hub.reporter import (
    COMMAND_KEY,
    COPYING_PUSH_EVERY,
    EVENT_CURSOR_KEY,
    REJECTED_KEY,
    Reporter,
    start_reporter,
)
from autotx_lib.hub.settings import HubSettings
from autotx_lib.journal import Journal
from autotx_lib.transfer import control
from autotx_lib.transfer.agent import Agent

from ..transfer.conftest import make_dataset
from .conftest import ProcessHub, ThreadHub, free_port, wait_for


def link(config: Config, url: str, token: str, folder: Path) -> Config:
    """The facility configured to report to the hub at ``url`` as agent 'test-pc'."""
    token_file = folder / "hub-token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    config.poll_seconds = 0.2
    config.hub = {"url": url, "token_file": token_file, "interval_seconds": 0.2}
    return config


def journal_events(journal: Journal) -> list[tuple]:
    with journal.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            select(J.events.c.id, J.events.c.kind, J.events.c.message).order_by(J.events.c.id))]


def hub_events(store: S.HubStore) -> list[tuple]:
    return [(e.seq, e.kind, e.message) for e in store.events(agent_id="test-pc", limit=100_000)]


def hub_states(store: S.HubStore) -> dict[str, str]:
    return {r.name: r.state for r in store.datasets(agent_id="test-pc")[0]}


def three_datasets(config: Config) -> None:
    for name in ("run1", "run2", "run3"):
        make_dataset(config.incoming, "alice", name, {"a.bin": os.urandom(3000), "b/c": b"c"})


class RunningAgent:
    """A real agent polling in a thread; with [hub] configured it runs its own reporter
    (one only: a second reporter on the same journal would run each command twice)."""

    def __init__(self, config: Config):
        self.agent = Agent(config)
        self.thread = threading.Thread(target=self.agent.run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.agent.stop()
        self.thread.join(60)  # the agent's reporter reports once more and ends first
        assert not self.thread.is_alive()


def test_a_run_arrives_at_the_hub_exactly_once(facility, hub, tmp_path):
    link(facility, hub.url, hub.agent, tmp_path)
    three_datasets(facility)
    running = RunningAgent(facility)
    try:
        wait_for(lambda: hub_states(hub.store) == dict.fromkeys(("run1", "run2", "run3"), "done"),
                 what="the three deliveries at the hub")
        agent = hub.client(hub.viewer).agent("test-pc")
        assert agent["state"] != "lost" and agent["free_space"]["central storage"] > 0
    finally:
        running.stop()  # the reporter's last round sends what happened while stopping
    assert hub_events(hub.store) == journal_events(running.agent.journal)


def test_hub_down_for_a_whole_run_then_started(facility, tmp_path):
    hub = ThreadHub(HubSettings(database=f"sqlite:///{tmp_path / 'hub.sqlite'}",
                                port=free_port()), start=False)
    link(facility, hub.url, hub.agent, tmp_path)
    three_datasets(facility)
    agent = Agent(facility)
    stop = threading.Event()
    reporter = start_reporter(facility, agent.journal, stop)
    try:
        summary = agent.run(once=True)  # the hub being down delays nothing
        assert summary.ok and len(summary.delivered) == 3
        assert agent.journal.get_setting(EVENT_CURSOR_KEY) is None  # nothing acknowledged
        hub.start()
        expected = journal_events(agent.journal)
        wait_for(lambda: hub_events(hub.store) == expected, what="every event at the hub")
        wait_for(lambda: set(hub_states(hub.store).values()) == {"done"}, what="the datasets")
    finally:
        stop.set()
        reporter.join(30)
        hub.stop()


KILLED_AFTER_PUSH = """
import os, signal, sys
from autotx_lib.config import load_config
from autotx_lib.hub.reporter import EVENT_CURSOR_KEY, Reporter
from autotx_lib.journal import Journal

config = load_config(sys.argv[1])
journal = Journal(config.journal_url)
record = journal.set_setting
def die_before_recording(key, value):
    if key == EVENT_CURSOR_KEY:  # the hub has acknowledged; the agent dies right now
        os.kill(os.getpid(), signal.SIGKILL)
    record(key, value)
journal.set_setting = die_before_recording
Reporter(config, journal).push_events()
"""


def test_agent_killed_after_push_before_recording_the_ack(facility, hub, tmp_path):
    from ..transfer.conftest import write_config

    config_file = write_config(facility, tmp_path / "agent.toml", 'journal = "sqlite:///'
                               f'{facility.managed / "autotx.sqlite"}"\n')
    (tmp_path / "hub-token").write_text(hub.agent)
    with config_file.open("a") as file:
        file.write(f'[hub]\nurl = "{hub.url}"\ntoken_file = "{tmp_path / "hub-token"}"\n'
                   'agent_id = "test-pc"\n')
    journal = Journal(facility.journal_url)
    for i in range(20):
        journal.log("info", "note", f"event {i}")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    died = subprocess.run([sys.executable, "-c", KILLED_AFTER_PUSH, str(config_file)], env=env)
    assert died.returncode == -9
    assert len(hub_events(hub.store)) == 20 and journal.get_setting(EVENT_CURSOR_KEY) is None
    facility.hub = {"url": hub.url, "token_file": tmp_path / "hub-token", "agent_id": "test-pc"}
    Reporter(facility, journal).push_events()  # pushes the same 20 again
    assert hub_events(hub.store) == journal_events(journal)  # once each
    assert journal.get_setting(EVENT_CURSOR_KEY) == 20


def test_hub_killed_mid_ingest_loses_nothing_it_acknowledged(database, tmp_path):
    store = S.HubStore(database)
    token = store.add_token("test-pc", "agent")
    hub = ProcessHub(tmp_path, database)
    hub.start()
    acknowledged: list[int] = []
    client = HubClient(hub.url, token, timeout=5)

    def push() -> None:
        seq = 0
        while True:
            batch = [{"seq": seq + i, "at": S.now().isoformat(), "level": "info",
                      "kind": "load", "message": "x" * 200} for i in range(1, 51)]
            try:
                client.request("POST", "/agents/test-pc/events", json={"events": batch})
            except Exception:
                return  # the hub is gone
            seq += 50
            acknowledged.extend(e["seq"] for e in batch)

    pusher = threading.Thread(target=push)
    pusher.start()
    wait_for(lambda: len(acknowledged) >= 1000, what="some acknowledged batches")
    hub.kill()
    pusher.join(30)
    hub.start()
    try:
        stored = {e.seq for e in store.events(agent_id="test-pc", limit=1_000_000)}
        assert set(acknowledged) <= stored
    finally:
        hub.kill()
        store.close()


def test_commands_reach_a_running_agent_once(facility, hub, tmp_path):
    link(facility, hub.url, hub.agent, tmp_path)
    make_dataset(facility.incoming, "bob", "nofolder", {"a": b"a"})  # bob: unmatched
    running = RunningAgent(facility)
    operator = hub.client(hub.operator)
    journal = running.agent.journal

    def finished(command: dict) -> dict:
        return wait_for(lambda: (c := operator.get_command(command["id"]))["state"] in
                        ("done", "failed") and c, what=f"command {command['action']}")

    try:
        done = finished(operator.command("test-pc", "suspend", reason="laser service"))
        assert done["state"] == "done" and "laser service" in done["result"]
        suspended = control.suspension(journal)
        assert "laser service" in suspended.reason and "operator" in suspended.reason
        assert finished(operator.command("test-pc", "resume"))["result"] == "resumed"
        assert control.suspension(journal) is None
        assert finished(operator.command("test-pc", "set_bandwidth", value="20M"))["state"] == "done"
        assert control.bandwidth_override(journal) == "20M"
        wait_for(lambda: hub_states(hub.store).get("nofolder") == "unmatched",
                 what="bob's dataset unmatched")
        dataset_id = next(r.dataset_id for r in hub.store.datasets()[0] if r.name == "nofolder")
        requeued = finished(operator.command("test-pc", "requeue", dataset_id=dataset_id))
        assert requeued["state"] == "done" and "requeued to" in requeued["result"]
        bad = finished(operator.command("test-pc", "set_bandwidth", value="fast please"))
        assert bad["state"] == "failed" and "ValueError" in bad["result"]
        # a replayed command (its acknowledgement was lost) is acknowledged, not run again
        with hub.store.engine.begin() as conn:
            conn.execute(S.commands.update().where(S.commands.c.id == done["id"])
                         .values(state="delivered", acked_at=None))
        replayed = finished(done)
        assert "not run twice" in replayed["result"]
        assert control.suspension(journal) is None
    finally:
        running.stop()
    with journal.engine.connect() as conn:
        suspensions = conn.execute(select(func.count()).select_from(J.events)
                                   .where(J.events.c.kind == "suspended")).scalar()
    assert suspensions == 1
    trail = hub.client(hub.admin).request("GET", "/audit", params={"limit": 100})
    assert sum(1 for a in trail if a["action"] == "command-suspend") == 3  # queued, acked x2


def test_command_for_an_offline_agent_is_delivered_or_expires(facility, hub, tmp_path):
    link(facility, hub.url, hub.agent, tmp_path)
    operator = hub.client(hub.operator)
    stale = operator.command("test-pc", "suspend", reason="too late", expires_in_s=0.2)
    kept = operator.command("test-pc", "set_bandwidth", value=5)
    wait_for(lambda: operator.get_command(stale["id"])["state"] == "expired",
             what="the short-lived command to expire")
    journal = Journal(facility.journal_url)
    assert Reporter(facility, journal).report_once()["commands"] == 1  # the agent returns
    assert control.suspension(journal) is None and control.bandwidth_override(journal) == 5
    assert operator.get_command(kept["id"])["state"] == "done"
    assert journal.get_setting(COMMAND_KEY)["id"] == kept["id"]


def test_a_refused_event_is_kept_aside_and_the_rest_arrives(facility, hub, tmp_path):
    link(facility, hub.url, hub.agent, tmp_path)
    journal = Journal(facility.journal_url)
    for i in range(10):
        journal.log("info", "note", "x" * 30_000 if i == 4 else f"event {i}")
    assert Reporter(facility, journal).push_events() == 9
    assert [e[0] for e in hub_events(hub.store)] == [1, 2, 3, 4, 6, 7, 8, 9, 10]
    rejected = journal.get_setting(REJECTED_KEY)
    assert rejected["events"] == [5] and "422" in rejected["last"]
    assert journal.get_setting(EVENT_CURSOR_KEY) == 10
    journal.log("info", "note", "after")
    assert Reporter(facility, journal).push_events() == 1  # not stuck


def test_no_reporter_without_hub_or_token(facility, tmp_path):
    journal = Journal(facility.journal_url)
    assert start_reporter(facility, journal, threading.Event()) is None
    facility.hub = {"url": "http://127.0.0.1:9", "token_file": tmp_path / "missing"}
    assert start_reporter(facility, journal, threading.Event()) is None
    assert "hub token file" in journal.recent_events(1)[0].message


@pytest.mark.parametrize("bad", [{"url": "http://hub"}, {"url": "hub:8765", "token_env": "T"}])
def test_hub_section_is_checked(facility, bad):
    with pytest.raises(ValueError, match=r"\[hub\]"):
        facility.hub = bad


def test_the_heartbeat_says_who_is_at_the_instrument(facility, hub, tmp_path):
    from autotx_lib.transfer.sessions import start_session

    link(facility, hub.url, hub.agent, tmp_path)
    journal = Journal(facility.journal_url)
    reporter = Reporter(facility, journal)
    reporter.heartbeat()
    assert hub.client(hub.viewer).agent("test-pc")["session"] is None
    start_session(facility, "alice", project="cells")
    reporter.heartbeat()
    session = hub.client(hub.viewer).agent("test-pc")["session"]
    assert (session["user"], session["project"], session["instrument"]) == \
        ("alice", "cells", "test-pc")


def test_the_agent_reports_by_itself(facility, hub, tmp_path):
    """With [hub] in its config, Agent.run starts the reporter: everything arrives."""
    link(facility, hub.url, hub.agent, tmp_path)
    three_datasets(facility)
    agent = Agent(facility)
    assert agent.run(once=True).ok
    assert hub_events(hub.store) == journal_events(agent.journal)
    assert set(hub_states(hub.store).values()) == {"done"}


def copying_dataset(journal: Journal) -> int:
    """A dataset the journal shows being copied (as the agent leaves it mid-copy)."""
    dataset = journal.add_dataset(user="alice", name="big", stamp="20261201-120000",
                                  state=J.COPYING, incoming_path="/x", processing_path="/y",
                                  algorithm="xxh128", total_files=4, total_bytes=4_000_000)
    journal.set_progress(dataset, copied_bytes=1_000_000, copied_files=1)
    return dataset


def test_while_a_copy_runs_only_the_heartbeat_goes_every_round(facility, hub, tmp_path):
    """Reporting stays cheap for a copying agent: the heartbeat (with the copy's progress)
    every round, the journal's records every COPYING_PUSH_EVERY rounds; none lost."""
    link(facility, hub.url, hub.agent, tmp_path)
    journal = Journal(facility.journal_url)
    reporter = Reporter(facility, journal)
    copying_dataset(journal)
    journal.log("info", "copy", "alice/big: started")
    pushed = [reporter.report_once(defer_while_copying=True)["events"]
              for _ in range(COPYING_PUSH_EVERY)]
    assert pushed[:-1] == [0] * (COPYING_PUSH_EVERY - 1) and pushed[-1] > 0
    current = hub.client(hub.viewer).agent("test-pc")["current"]
    assert (current["name"], current["copied_bytes"]) == ("big", 1_000_000)
    journal.log("info", "copy", "alice/big: half way")
    assert reporter.report_once(defer_while_copying=True)["events"] == 0
    assert reporter.report_once()["events"] == 1  # the last round (agent stopping): all
    assert hub_events(hub.store) == journal_events(journal)


def test_the_heartbeat_reads_no_jobs(facility, hub, tmp_path):
    """OMERO import runs on the pipelines engine: the heartbeat no longer reads the old
    jobs table (a leftover job there does not show up at the hub)."""
    link(facility, hub.url, hub.agent, tmp_path)
    journal = Journal(facility.journal_url)
    with journal.engine.begin() as conn:
        conn.execute(J.jobs.insert().values(kind="omero-import", state="created",
                                            payload="{}", attempts=0,
                                            created_at=J.utcnow(), next_attempt_at=J.utcnow()))
    Reporter(facility, journal).heartbeat()
    status = hub.client(hub.viewer).request("GET", "/agents/test-pc")["status"]
    assert status["jobs"] == [] and status["agent_state"]
