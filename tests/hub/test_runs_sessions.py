"""Pipeline runs and instrument sessions reach the hub once each, and the API lists them."""

from __future__ import annotations

import datetime as dt
import threading

import httpx
import pytest

from autotx_lib.config import Config
from autotx_lib.hub import store as S
from autotx_lib.hub.reporter import RUN_CURSOR_KEY, SESSION_CURSOR_KEY, Reporter, start_reporter
from autotx_lib.hub.settings import HubSettings
from autotx_lib.journal import Journal
from autotx_lib.journal.pipeline_runs import PipelineStore
from autotx_lib.transfer.sessions import end_session, start_session

from .conftest import ThreadHub, free_port, wait_for
from .test_reporter import link


def add_run(runs: PipelineStore, name: str) -> int:
    run_id, created = runs.add_run(workflow="plate-qc", version="1", dataset_path=f"/d/{name}",
                                   initiator="test-pc", user="alice")
    assert created
    return run_id


def start_run(runs: PipelineStore, run_id: int) -> None:
    assert runs.claim(runs.run(run_id), "engine-1")


def finish_run(runs: PipelineStore, run_id: int, status: str = "finished") -> None:
    assert runs.record_outcomes([{"run_id": run_id, "attempt": 1, "status": status,
                                  "duration_s": 1.5, "error": None, "next_attempt_at": None,
                                  "version": None, "steps": [], "results": None,
                                  "event": None}]) == [True]


def journal_runs(journal: Journal) -> dict[int, str]:
    return {r.id: r.status for r in PipelineStore(journal).query(limit=1000)}


def hub_runs(hub: ThreadHub) -> dict[int, str]:
    return {r.run_id: r.status for r in hub.store.runs(agent_id="test-pc")[0]}


def hub_sessions(hub: ThreadHub) -> dict[int, tuple]:
    return {r.session_id: (r.user, r.end_reason) for r in
            hub.store.sessions(agent_id="test-pc")[0]}


def test_hub_down_then_up_every_run_and_session_arrives_once(facility: Config, tmp_path):
    (facility.destination / "bob").mkdir()
    hub = ThreadHub(HubSettings(database=f"sqlite:///{tmp_path / 'hub.sqlite'}",
                                port=free_port()), start=False)
    link(facility, hub.url, hub.agent, tmp_path)
    journal = Journal(facility.journal_url)
    runs = PipelineStore(journal)
    stop = threading.Event()
    reporter = start_reporter(facility, journal, stop)
    try:
        done, running, waiting = (add_run(runs, n) for n in ("a", "b", "c"))
        start_run(runs, done)
        finish_run(runs, done)
        start_run(runs, running)
        start_session(facility, "alice", project="cells")
        start_session(facility, "bob")  # ends alice's ("replaced")
        assert journal.get_setting(RUN_CURSOR_KEY) is None  # the hub is down
        hub.start()
        wait_for(lambda: hub_runs(hub) == journal_runs(journal), what="the runs at the hub")
        assert hub_runs(hub) == {done: "finished", running: "started", waiting: "created"}
        wait_for(lambda: hub_sessions(hub) == {1: ("alice", "replaced"), 2: ("bob", None)},
                 what="the sessions at the hub")
        # what changes after its first push arrives too: in its latest state
        finish_run(runs, running, "error")
        end_session(facility, reason="logout")
        wait_for(lambda: hub_runs(hub)[running] == "error", what="the run's end at the hub")
        wait_for(lambda: hub_sessions(hub)[2] == ("bob", "logout"), what="bob's logout")
    finally:
        stop.set()
        reporter.join(30)
    assert hub_runs(hub) == journal_runs(journal)  # one hub row per journal run
    # everything has been pushed: nothing is sent again, only the run that can still change
    # is remembered as not ended
    reporter = Reporter(facility, journal, token=hub.agent)
    assert reporter.report_once()["runs"] == reporter.report_once()["sessions"] == 0
    cursor = journal.get_setting(RUN_CURSOR_KEY)
    assert (cursor["after"], list(cursor["open"])) == (waiting, [str(waiting)])
    assert journal.get_setting(SESSION_CURSOR_KEY)["open"] == {}
    hub.stop()


def test_a_push_repeated_after_a_lost_answer_changes_nothing(facility, hub, tmp_path):
    link(facility, hub.url, hub.agent, tmp_path)
    journal = Journal(facility.journal_url)
    runs = PipelineStore(journal)
    ids = [add_run(runs, str(i)) for i in range(3)]
    start_session(facility, "alice")
    reporter = Reporter(facility, journal)
    assert (reporter.push_runs(), reporter.push_sessions()) == (3, 1)
    before = [r._mapping for r in hub.store.runs(agent_id="test-pc")[0]]
    # the agent died before it recorded the hub's answer: it pushes the same again
    journal.set_setting(RUN_CURSOR_KEY, None)
    journal.set_setting(SESSION_CURSOR_KEY, None)
    assert (reporter.push_runs(), reporter.push_sessions()) == (3, 1)
    after = hub.store.runs(agent_id="test-pc")[0]
    assert len(after) == 3 and len(hub.store.sessions()[0]) == 1
    assert [{k: v for k, v in r._mapping.items() if k not in ("observed_at", "received_at")}
            for r in after] == \
        [{k: v for k, v in r.items() if k not in ("observed_at", "received_at")} for r in before]
    # an older state arriving late (a slow resend) never rolls a newer one back
    start_run(runs, ids[0])
    finish_run(runs, ids[0])
    assert reporter.push_runs() == 1
    stale = {"run_id": ids[0], "workflow": "plate-qc", "status": "created",
             "created_at": dt.datetime.now(dt.UTC).isoformat(),
             "observed_at": (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)).isoformat()}
    hub.client(hub.agent).request("POST", "/agents/test-pc/runs", json={"runs": [stale]})
    assert hub.store.run("test-pc", ids[0]).status == "finished"
    # the agent's clock was an hour ahead at the last push, then stepped back: what it
    # reads next is still the newer state
    cursor = journal.get_setting(RUN_CURSOR_KEY)
    ahead = dt.datetime.fromisoformat(cursor["observed"]) + dt.timedelta(hours=1)
    journal.set_setting(RUN_CURSOR_KEY, {**cursor, "observed": ahead.isoformat()})
    with hub.store.engine.begin() as conn:
        conn.execute(S.runs.update().values(observed_at=ahead))
    start_run(runs, ids[1])
    assert reporter.push_runs() == 1
    assert hub.store.run("test-pc", ids[1]).status == "started"


@pytest.fixture
def any_hub(database):
    """A real hub over SQLite, then over PostgreSQL."""
    server = ThreadHub(HubSettings(database=database))
    yield server
    server.stop()


def test_runs_and_sessions_are_listed_filtered_and_paged(any_hub):
    hub = any_hub
    agent = hub.client(hub.agent)
    other = hub.client(hub.store.add_token("other-pc", "agent"))
    base = dt.datetime(2026, 11, 3, 9, tzinfo=dt.UTC)

    def run(i: int, status: str) -> dict:
        at = (base + dt.timedelta(hours=i)).isoformat()
        return {"run_id": i, "workflow": "previews" if i % 2 else "plate-qc", "status": status,
                "user": "alice", "created_at": at, "observed_at": at}

    agent.request("POST", "/agents/test-pc/runs",
                  json={"runs": [run(i, "finished" if i < 4 else "error") for i in range(1, 6)]})
    other.request("POST", "/agents/other-pc/runs", json={"runs": [run(1, "started")]})
    agent.request("POST", "/agents/test-pc/sessions", json={"sessions": [
        {"session_id": 1, "instrument": "test-pc", "user": "alice",
         "started_at": base.isoformat(), "ended_at": (base + dt.timedelta(hours=1)).isoformat(),
         "end_reason": "user", "observed_at": base.isoformat()},
        {"session_id": 2, "instrument": "test-pc", "user": "bob",
         "started_at": (base + dt.timedelta(hours=2)).isoformat(),
         "observed_at": base.isoformat()}]})
    viewer = hub.client(hub.viewer)
    page = viewer.request("GET", "/runs", params={"agent": "test-pc", "limit": 2, "offset": 1})
    assert page["total"] == 5 and [r["run_id"] for r in page["items"]] == [4, 3]  # newest first
    assert viewer.request("GET", "/runs", params={"status": "error"})["total"] == 2
    assert viewer.request("GET", "/runs", params={"workflow": "previews"})["total"] == 4
    since = viewer.request("GET", "/runs", params={
        "since": (base + dt.timedelta(hours=3)).isoformat(), "agent": "test-pc"})
    assert [r["run_id"] for r in since["items"]] == [5, 4, 3]
    assert viewer.request("GET", "/runs/other-pc/1")["status"] == "started"
    assert list(viewer.runs(agent="test-pc", limit=3)["run_id"]) == [5, 4, 3]
    # a dataset's detail lists its runs
    agent.request("POST", "/agents/test-pc/datasets", json={"datasets": [
        {"dataset_id": 9, "user": "alice", "name": "plate1", "state": "done",
         "updated_at": base.isoformat()}]})
    agent.request("POST", "/agents/test-pc/runs", json={"runs": [
        {**run(6, "finished"), "dataset_id": 9}]})
    assert [r["run_id"] for r in viewer.dataset("test-pc", 9)["runs"]] == [6]
    sessions = viewer.sessions()
    assert list(sessions["user"]) == ["bob", "alice"]
    opened = viewer.request("GET", "/sessions", params={"open": "true"})
    assert [s["user"] for s in opened["items"]] == ["bob"] and opened["total"] == 1
    assert viewer.request("GET", "/sessions/test-pc/1")["end_reason"] == "user"
    # errors in the hub's one shape; an agent pushes as itself only and reads nothing
    missing = httpx.get(f"{hub.url}/runs/test-pc/99",
                        headers={"Authorization": f"Bearer {hub.viewer}"})
    assert missing.status_code == 404 and "no pipeline run 99" in missing.json()["error"]["message"]
    assert httpx.get(f"{hub.url}/sessions",
                     headers={"Authorization": f"Bearer {hub.agent}"}).status_code == 403
    assert httpx.post(f"{hub.url}/agents/other-pc/runs", json={"runs": []},
                      headers={"Authorization": f"Bearer {hub.agent}"}).status_code == 403
    assert httpx.get(f"{hub.url}/runs").status_code == 401
    bad = httpx.post(f"{hub.url}/agents/test-pc/sessions", json={"sessions": [{"session_id": 3}]},
                     headers={"Authorization": f"Bearer {hub.agent}"})
    assert bad.status_code == 422 and "sessions.0" in bad.json()["error"]["message"]


def test_pipeline_runs_in_the_statistics(any_hub):
    """stats("runs"): per day x agent x workflow, counts by status and durations, on
    SQLite and on PostgreSQL; the other tables keep their shape."""
    hub = any_hub
    agent = hub.client(hub.agent)
    day1, day2 = dt.datetime(2026, 11, 3, 9, tzinfo=dt.UTC), dt.datetime(2026, 11, 4, 23,
                                                                          tzinfo=dt.UTC)

    def run(i: int, at: dt.datetime, workflow: str, status: str,
            duration: float | None) -> dict:
        return {"run_id": i, "workflow": workflow, "status": status, "duration_s": duration,
                "created_at": at.isoformat(), "observed_at": at.isoformat()}

    agent.request("POST", "/agents/test-pc/runs", json={"runs": [
        run(1, day1, "omero-import", "finished", 10.0),
        run(2, day1, "omero-import", "finished", 30.0),
        run(3, day1, "omero-import", "error", 2.0),
        run(4, day1, "omero-import", "started", None),
        run(5, day1, "plate-qc", "timeout", 60.0),
        run(6, day2, "omero-import", "created", None)]})
    tables = hub.client(hub.viewer).stats()
    assert set(tables) == {"day", "user", "destination", "runs", "errors"}
    runs = tables["runs"]
    assert list(runs.columns) == ["day", "agent_id", "workflow", "runs", "finished",
                                  "failures", "open", "median_duration_s",
                                  "total_duration_s"]
    assert runs[["day", "workflow"]].values.tolist() == [
        ["2026-11-04", "omero-import"], ["2026-11-03", "omero-import"],
        ["2026-11-03", "plate-qc"]]  # newest day first
    omero = runs.iloc[1]
    assert (omero["runs"], omero["finished"], omero["failures"], omero["open"]) == (4, 2, 1, 1)
    assert omero["median_duration_s"] == pytest.approx(10.0)  # of 10, 30 and 2
    assert omero["total_duration_s"] == pytest.approx(42.0)
    assert runs.iloc[2]["failures"] == 1  # a timeout is a failure
    since = hub.client(hub.viewer).stats("runs", since=dt.datetime(2026, 11, 4, tzinfo=dt.UTC))
    assert since["runs"].tolist() == [1]
