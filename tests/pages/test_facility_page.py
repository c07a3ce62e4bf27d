"""The facility page (`autotx dashboard facility`) and the hub's API docs in a real browser.

A real hub (uvicorn on loopback) with two agents that reported heartbeats, datasets, an
instrument session and pipeline runs; the page is served by the real command (Voila) and
read by Debian's chromium through Playwright, with everything off loopback refused.
"""

from __future__ import annotations

import datetime as dt

from autotx_lib.hub.client import HubClient
from autotx_lib.hub.settings import HubSettings

from ..hub.conftest import ThreadHub
from .test_pages import _check_offline, _open, _serve, browser  # noqa: F401 - the fixture

CREATED = dt.datetime(2026, 11, 3, 9, tzinfo=dt.UTC)


def report(client: HubClient, agent_id: str, state: str, dataset: str, run: dict | None,
           session: dict | None) -> None:
    """What a reporting agent sends: a heartbeat, a dataset, a run, a session."""
    at = CREATED.isoformat()
    client.request("POST", f"/agents/{agent_id}/heartbeat", json={
        "sent_at": dt.datetime.now(dt.UTC).isoformat(), "interval_s": 600,
        "status": {"agent_state": state, "queue": [], "waiting": []},
        "free_space": {"central storage": 7_000_000_000}})
    client.request("POST", f"/agents/{agent_id}/datasets", json={"datasets": [
        {"dataset_id": 1, "user": "alice", "name": dataset, "state": "done",
         "total_bytes": 3_000_000, "created_at": at, "finished_at": at, "updated_at": at}]})
    if run:
        client.request("POST", f"/agents/{agent_id}/runs", json={"runs": [
            {"run_id": 1, "created_at": at, "observed_at": at, **run}]})
    if session:
        client.request("POST", f"/agents/{agent_id}/sessions", json={"sessions": [
            {"session_id": 1, "instrument": agent_id, "started_at": at, "observed_at": at,
             **session}]})


def test_facility_page_shows_the_agents_datasets_sessions_and_runs(browser, tmp_path):  # noqa: F811
    hub = ThreadHub(HubSettings(database=f"sqlite:///{tmp_path / 'hub.sqlite'}"))
    try:
        other = hub.store.add_token("scope-2", "agent")
        report(hub.client(hub.agent), "test-pc", "transferring", "HeLa_DAPI_zstack",
               {"workflow": "plate-qc", "status": "finished", "user": "alice",
                "duration_s": 12.5}, {"user": "alice", "project": "mitosis"})
        report(hub.client(other), "scope-2", "idle", "zebrafish_timelapse",
               {"workflow": "previews", "status": "error", "user": "bob",
                "error": "no plate layout matches"}, None)
        (tmp_path / "token").write_text(hub.viewer + "\n")
        access = tmp_path / "hub-access.toml"
        access.write_text(f'url = "{hub.url}"\ntoken_file = "token"\n')
        served = _serve(tmp_path, "facility", "-c", str(access))
        try:
            page = _open(browser, served, "2 instruments")
            tiles = page.locator("body").inner_text()
            assert "test-pc" in tiles and "scope-2" in tiles and "transferring" in tiles
            page.get_by_text("History", exact=True).click()
            page.get_by_text("pipeline runs").wait_for(timeout=60_000)
            sessions = page.locator("table.autotx-sessions").inner_text()
            assert "alice" in sessions and "mitosis" in sessions and "open" in sessions
            runs = page.locator("table.autotx-runs").inner_text()
            assert "plate-qc" in runs and "finished" in runs and "12.5 s" in runs
            assert "previews" in runs and "no plate layout matches" in runs
            body = page.locator("body").inner_text()
            assert "HeLa_DAPI_zstack" in body and "zebrafish_timelapse" in body
            page.screenshot(path=str(tmp_path / "facility.png"))
            assert not page.errors, page.errors
            _check_offline(page)
        finally:
            served.stop()
    finally:
        hub.stop()


def loopback_only(refused: list[str]):
    """A Playwright route handler passing loopback requests, refusing (and noting) others."""
    def handle(route, _request) -> None:
        if route.request.url.startswith(("http://127.0.0.1", "data:", "blob:")):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()
    return handle


def test_the_hub_api_docs_render_without_internet(browser, tmp_path):  # noqa: F811
    hub = ThreadHub(HubSettings(database=f"sqlite:///{tmp_path / 'hub.sqlite'}"))
    try:
        page = browser.new_page(viewport={"width": 1300, "height": 1200})
        refused: list[str] = []
        page.route("**/*", loopback_only(refused))
        page.goto(hub.url + "/docs", timeout=60_000)
        # Swagger UI ran: the routes and the description come from the hub's OpenAPI spec
        page.get_by_text("/agents/{agent_id}/runs").first.wait_for(timeout=60_000)
        assert page.get_by_text("The facility's view of its transfer agents").count()
        page.screenshot(path=str(tmp_path / "docs.png"))
        assert not refused, f"/docs tried to load from the internet: {refused}"
        page.close()
    finally:
        hub.stop()
