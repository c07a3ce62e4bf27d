"""FacilityMonitor over a real hub: tiles, lost agents, controls become commands, tabs."""

from __future__ import annotations

import datetime as dt

import pytest

pytest.importorskip("ipywidgets", reason="the dashboards need ipywidgets (the viz extra)")

from autotx_lib.dashboards.facility import (  # noqa: E402
    RUN_COLOURS,
    STATE_COLOURS,
    FacilityMonitor,
)
from autotx_lib.hub.client import HubClient  # noqa: E402
from autotx_lib.hub.settings import HubSettings  # noqa: E402

from ..hub.conftest import ThreadHub, wait_for  # noqa: E402


@pytest.fixture
def hub(tmp_path):
    """A real hub (uvicorn on loopback) with tokens admin, viewer, operator, test-pc."""
    server = ThreadHub(HubSettings(database=f"sqlite:///{tmp_path / 'hub.sqlite'}"))
    yield server
    server.stop()


def beat(hub, agent_id: str, token: str, interval: float, state: str = "idle") -> None:
    status = {"agent_state": state, "agent_detail": None, "suspended": None,
              "current": {"user": "alice", "name": "run7", "percent": 40.0},
              "queue": [{"id": 3, "user": "bob", "name": "run8", "state": "queued",
                         "total_bytes": 2_000_000}], "waiting": []}
    HubClient(hub.url, token).request("POST", f"/agents/{agent_id}/heartbeat", json={
        "sent_at": dt.datetime.now(dt.UTC).isoformat(), "interval_s": interval,
        "status": status, "free_space": {"central storage": 5_000_000_000}})


def test_tiles_lost_agents_and_controls(hub):
    old = hub.store.add_token("old-pc", "agent")
    beat(hub, "test-pc", hub.agent, interval=60, state="transferring")
    beat(hub, "old-pc", old, interval=0.05)
    monitor = FacilityMonitor(hub.url, hub.operator, start=False)
    try:
        assert len(monitor.tiles.children) == 2
        agents = wait_for(lambda: [a for a in monitor.refresh() if a["state"] == "lost"],
                          timeout=5, what="old-pc to turn lost")
        assert [a["id"] for a in agents] == ["old-pc"]
        lost_tile = monitor.tiles.children[0]  # agents come sorted by id
        assert STATE_COLOURS["lost"] in lost_tile.layout.border
        assert "alice/run7" in monitor.tiles.children[1].children[0].value
        assert "1 lost" in monitor.updated.value
        monitor.tiles.children[1].children[2].click()  # "details" of test-pc
        assert monitor.selected == "test-pc" and "run8" in monitor.detail.value
        monitor.reason.value = "laser service"
        suspend = monitor.controls.children[0].children[1]
        suspend.click()
        assert "queued for test-pc" in monitor.message.value
        command = hub.client(hub.viewer).commands(agent="test-pc").iloc[0]
        assert (command["action"], command["args"]["reason"]) == ("suspend", "laser service")
        assert "laser service" in monitor.detail.value  # the command list in the detail
    finally:
        monitor.close()


def test_a_viewer_sees_why_it_cannot_command(hub):
    beat(hub, "test-pc", hub.agent, interval=60)
    monitor = FacilityMonitor(hub.url, hub.viewer, start=False)
    monitor.select("test-pc")
    monitor.controls.children[0].children[2].click()  # resume
    assert "403" in monitor.message.value and "operator" in monitor.message.value


def test_history_and_statistics_tabs(hub):
    created = dt.datetime(2026, 11, 3, 9, tzinfo=dt.UTC)
    HubClient(hub.url, hub.agent).request("POST", "/agents/test-pc/datasets", json={"datasets": [
        {"dataset_id": 1, "user": "alice", "name": "run1", "state": "done", "total_bytes": 10**9,
         "created_at": created.isoformat(), "started_at": created.isoformat(),
         "finished_at": (created + dt.timedelta(seconds=100)).isoformat(),
         "updated_at": (created + dt.timedelta(seconds=100)).isoformat()}]})
    monitor = FacilityMonitor(hub.url, hub.viewer, start=False)
    monitor.tabs.selected_index = 1
    assert "run1" in monitor.history.value and "2026-11-03 09:01" in monitor.history.value
    assert "no sessions yet" in monitor.history.value
    assert "no pipeline runs yet" in monitor.history.value
    HubClient(hub.url, hub.agent).request("POST", "/agents/test-pc/runs", json={"runs": [
        {"run_id": 7, "workflow": "plate-qc", "status": "error", "user": "alice",
         "error": "ValueError: no plate layout", "duration_s": 2.25,
         "created_at": created.isoformat(), "observed_at": created.isoformat()}]})
    HubClient(hub.url, hub.agent).request("POST", "/agents/test-pc/sessions", json={
        "sessions": [{"session_id": 3, "instrument": "test-pc", "user": "carol",
                      "project": "zebrafish", "started_at": created.isoformat(),
                      "observed_at": created.isoformat()}]})
    monitor.refresh_history()
    sessions = monitor.history.value.split("autotx-sessions")[1].split("</table>")[0]
    assert "carol" in sessions and "zebrafish" in sessions and "open" in sessions
    runs = monitor.history.value.split("autotx-runs")[1].split("</table>")[0]
    assert "plate-qc" in runs and "no plate layout" in runs and "2.2 s" in runs
    assert RUN_COLOURS["error"] in runs
    monitor.tabs.selected_index = 2
    tables = monitor.refresh_statistics()
    assert tables["day"]["median_rate_mb_s"].tolist() == [10.0]
    assert type(monitor.statistics.children[0]).__name__ == "_BokehModel"
    assert "2026-11-03" in monitor.statistics.children[1].value


def test_the_facility_page_reads_the_hub_access_file(hub, tmp_path, monkeypatch):
    from autotx_lib.pages import PAGES, facility_page

    assert PAGES["facility"].notebook.is_file()
    (tmp_path / "token").write_text(hub.viewer + "\n")
    access = tmp_path / "hub-access.toml"
    access.write_text(f'url = "{hub.url}"\ntoken_file = "token"\n')  # relative to the file
    beat(hub, "test-pc", hub.agent, interval=60)
    monkeypatch.setenv("AUTOTX_CONFIG", str(access))
    widget = facility_page()
    assert "test-pc" in widget.children[2].children[0].children[0].children[0].children[0].value
    access.write_text(f'url = "{hub.url}"\n')
    assert "token_file" in facility_page().data  # a message saying what to add
