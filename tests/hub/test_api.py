"""The hub's HTTP API against a real uvicorn server: security, idempotent pushes, reads."""

from __future__ import annotations

import datetime as dt
import re
import time

import httpx
import pytest

from autotx_lib.errors import HubError
from autotx_lib.hub.settings import HubSettings
from autotx_lib.hub.store import HubStore

from .conftest import ThreadHub, wait_for

NOW = dt.datetime.now(dt.UTC)


def event(seq: int, at: dt.datetime = NOW, **extra) -> dict:
    return {"seq": seq, "at": at.isoformat(), "level": "info", "kind": "copy",
            "message": f"event {seq}", **extra}


def get(hub, path: str, token: str | None, headers: dict | None = None) -> httpx.Response:
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(hub.url + path, headers={**auth, **(headers or {})})


def post(hub, path: str, token: str | None, body) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(hub.url + path, headers=headers, json=body)


READ_ROUTES = ["/agents", "/agents/test-pc", "/datasets", "/events", "/stats/day",
               "/commands", "/commands/1", "/datasets/test-pc/1"]


def test_nothing_is_readable_without_a_valid_token(hub):
    for path in READ_ROUTES + ["/audit", "/tokens", "/agents/test-pc/commands"]:
        for token in (None, "not-a-token"):
            answer = get(hub, path, token)
            assert answer.status_code == 401, (path, answer.text)
            assert "token" in answer.json()["error"]["message"]
    assert post(hub, "/agents/test-pc/events", None, {"events": []}).status_code == 401


def test_roles(hub):
    for path in ("/agents", "/datasets", "/events", "/stats/user"):
        assert get(hub, path, hub.viewer).status_code == 200
        assert get(hub, path, hub.agent).status_code == 403  # agents read only their commands
    assert get(hub, "/agents/test-pc/commands", hub.agent).status_code == 200
    command = {"agent_id": "test-pc", "action": "resume"}
    denied = post(hub, "/commands", hub.viewer, command)
    assert denied.status_code == 403 and "operator" in denied.json()["error"]["message"]
    assert post(hub, "/commands", hub.operator, command).status_code == 201
    assert get(hub, "/tokens", hub.operator).status_code == 403
    assert get(hub, "/audit", hub.admin).json()[0]["token_name"] == "operator"
    # only agents push, and only as themselves
    assert post(hub, "/agents/test-pc/events", hub.admin, {"events": []}).status_code == 403


def test_an_agent_token_cannot_push_as_another_agent(hub):
    answer = post(hub, "/agents/other-pc/events", hub.agent, {"events": [event(1)]})
    assert answer.status_code == 403
    assert "other-pc" in answer.json()["error"]["message"]
    assert get(hub, "/agents/other-pc/commands", hub.agent).status_code == 403
    assert get(hub, "/events", hub.viewer).json()["items"] == []


def test_a_revoked_token_gets_401(hub):
    assert post(hub, "/agents/test-pc/events", hub.agent, {"events": [event(1)]}).is_success
    assert hub.store.revoke_token("test-pc")
    answer = post(hub, "/agents/test-pc/events", hub.agent, {"events": [event(2)]})
    assert answer.status_code == 401 and "revoked" in answer.json()["error"]["message"]
    # tokens are stored hashed: the database never holds the token itself
    assert all(hub.agent not in str(tuple(row)) for row in hub.store.tokens())


def test_a_token_revoked_by_another_process_stops_working_within_the_cache_time(tmp_path):
    """The hub remembers verified tokens (no database look-up per request); a revocation
    from the CLI (another process, another store) takes effect within token_cache_seconds."""
    database = f"sqlite:///{tmp_path / 'hub.sqlite'}"
    hub = ThreadHub(HubSettings(database=database, token_cache_seconds=1.0))
    cli = HubStore(database)  # what `autotx hub token revoke` opens
    try:
        assert get(hub, "/agents", hub.viewer).status_code == 200  # verified: now cached
        assert cli.revoke_token("viewer")
        revoked_at = time.monotonic()
        wait_for(lambda: get(hub, "/agents", hub.viewer).status_code == 401, timeout=10,
                 what="the revoked token to get 401")
        assert time.monotonic() - revoked_at <= 1.0 + 1.5  # the cache time, plus requests
        # revoked through the hub's own store (the API, the test's store): at once
        assert get(hub, "/agents", hub.admin).status_code == 200
        assert hub.store.revoke_token("admin")
        assert get(hub, "/agents", hub.admin).status_code == 401
    finally:
        cli.close()
        hub.stop()


def test_malformed_and_oversized_pushes_get_a_clear_4xx(tmp_path):
    hub = ThreadHub(HubSettings(database=f"sqlite:///{tmp_path / 'hub.sqlite'}",
                                max_body_bytes=10_000))
    try:
        bad = post(hub, "/agents/test-pc/events", hub.agent, {"events": [{"seq": "x"}]})
        assert bad.status_code == 422
        assert bad.json()["error"]["message"].startswith("invalid request: body.events.0.seq")
        big = post(hub, "/agents/test-pc/events", hub.agent,
                   {"events": [event(1, message="x" * 20_000)]})
        assert big.status_code == 413 and "limit" in big.json()["error"]["message"]
        assert post(hub, "/agents/test-pc/events", hub.agent, {"events": [event(1)]}).is_success
    finally:
        hub.stop()


def test_pushes_are_stored_once_in_the_agents_order(hub):
    skewed = [event(1, NOW + dt.timedelta(minutes=10)), event(2, NOW - dt.timedelta(minutes=10)),
              event(3, NOW)]
    first = post(hub, "/agents/test-pc/events", hub.agent, {"events": skewed[:2]}).json()
    again = post(hub, "/agents/test-pc/events", hub.agent, {"events": skewed}).json()
    assert (first["accepted"], again["accepted"], again["duplicates"]) == (2, 1, 2)
    items = get(hub, "/events?agent=test-pc", hub.viewer).json()["items"]
    assert [e["seq"] for e in items] == [1, 2, 3]  # the agent's sequence, not its clock


def test_clock_skew_does_not_change_last_seen(hub):
    for skew in (dt.timedelta(minutes=10), -dt.timedelta(minutes=10)):
        sent = dt.datetime.now(dt.UTC) + skew
        answer = post(hub, "/agents/test-pc/heartbeat", hub.agent,
                      {"sent_at": sent.isoformat(), "interval_s": 2,
                       "status": {"agent_state": "idle"}})
        assert answer.is_success
        agent = get(hub, "/agents/test-pc", hub.viewer).json()
        seen = dt.datetime.fromisoformat(agent["last_seen"])
        assert abs((seen - dt.datetime.now(dt.UTC)).total_seconds()) < 5  # hub clock
        assert agent["state"] == "idle"  # neither "lost" (-10 min) nor from the future
        assert abs(agent["clock_offset_s"] - skew.total_seconds()) < 5


def test_a_silent_agent_turns_lost(hub):
    post(hub, "/agents/test-pc/heartbeat", hub.agent,
         {"sent_at": NOW.isoformat(), "interval_s": 0.1, "status": {"agent_state": "idle"}})
    from .conftest import wait_for

    wait_for(lambda: get(hub, "/agents", hub.viewer).json()[0]["state"] == "lost",
             timeout=5, what="the agent silent for 3 heartbeats to be lost")


def test_etag_answers_304_when_nothing_changed(hub):
    post(hub, "/agents/test-pc/events", hub.agent, {"events": [event(1)]})
    first = get(hub, "/events", hub.viewer)
    tag = first.headers["ETag"]
    again = get(hub, "/events", hub.viewer, headers={"If-None-Match": tag})
    assert again.status_code == 304
    post(hub, "/agents/test-pc/events", hub.agent, {"events": [event(2)]})
    newer = get(hub, f"/events?after={first.json()['next_after']}", hub.viewer).json()
    assert [e["seq"] for e in newer["items"]] == [2]


def dataset(i: int, user: str, state: str, day: int, size: int = 1000) -> dict:
    created = dt.datetime(2026, 11, day, 9, tzinfo=dt.UTC)
    return {"dataset_id": i, "user": user, "name": f"run{i}", "state": state,
            "destination": "central", "total_files": 2, "total_bytes": size,
            "created_at": created.isoformat(),
            "started_at": (created + dt.timedelta(seconds=10)).isoformat(),
            "finished_at": (created + dt.timedelta(seconds=20)).isoformat(),
            "updated_at": (created + dt.timedelta(seconds=20)).isoformat()}


def test_datasets_filters_pages_and_detail(hub):
    rows = [dataset(i, "alice" if i % 2 else "bob", "done" if i < 5 else "error", 1 + i % 3)
            for i in range(1, 8)]
    assert post(hub, "/agents/test-pc/datasets", hub.agent, {"datasets": rows}).is_success
    older = {**rows[0], "state": "queued", "updated_at": rows[0]["created_at"]}
    post(hub, "/agents/test-pc/datasets", hub.agent, {"datasets": [older]})  # never wins
    client = hub.client(hub.viewer)
    assert len(client.datasets(user="alice")) == 4
    assert set(client.datasets(state="error")["dataset_id"]) == {5, 6, 7}
    page = get(hub, "/datasets?limit=3&offset=3", hub.viewer).json()
    assert (page["total"], len(page["items"])) == (7, 3)
    detail = client.dataset("test-pc", 1)
    assert detail["state"] == "done" and detail["deliveries"][0]["destination"] == "central"
    with pytest.raises(HubError, match="404"):
        client.dataset("test-pc", 99)


def test_statistics_tables(hub):
    rows = [dataset(1, "alice", "done", 1, 10_000_000), dataset(2, "alice", "done", 1, 30_000_000),
            dataset(3, "bob", "error", 2)]
    post(hub, "/agents/test-pc/datasets", hub.agent, {"datasets": rows})
    post(hub, "/agents/test-pc/events", hub.agent,
         {"events": [event(1, level="error", kind="quarantined")]})
    tables = hub.client(hub.viewer).stats()
    day = tables["day"].set_index("day")
    assert day.loc["2026-11-01", "datasets"] == 2 and day.loc["2026-11-01", "bytes"] == 40_000_000
    assert day.loc["2026-11-01", "median_rate_mb_s"] == pytest.approx(2.0)  # 1 and 3 MB/s
    assert day.loc["2026-11-01", "median_ready_to_delivered_s"] == pytest.approx(20)
    user = tables["user"].set_index("user")
    assert (user.loc["bob", "failures"], user.loc["alice", "failures"]) == (1, 0)
    assert tables["destination"]["datasets"].tolist() == [3]
    assert tables["errors"].iloc[0][["kind", "count"]].tolist() == ["quarantined", 1]


def test_commands_flow_and_replayed_acknowledgement(hub):
    operator, agent = hub.client(hub.operator), hub.client(hub.agent)
    sent = operator.command("test-pc", "set_bandwidth", value="20M")
    assert sent["state"] == "pending" and sent["created_by"] == "operator"
    taken = agent.request("GET", "/agents/test-pc/commands")
    assert [c["id"] for c in taken] == [sent["id"]]
    assert operator.get_command(sent["id"])["state"] == "delivered"
    ack = {"ok": True, "result": "bandwidth: 20 MB/s"}
    agent.request("POST", f"/agents/test-pc/commands/{sent['id']}/ack", json=ack)
    with pytest.raises(HubError, match="409.*already acknowledged"):
        agent.request("POST", f"/agents/test-pc/commands/{sent['id']}/ack", json=ack)
    assert agent.request("GET", "/agents/test-pc/commands") == []
    done = operator.get_command(sent["id"])
    assert (done["state"], done["result"]) == ("done", "bandwidth: 20 MB/s")
    trail = hub.client(hub.admin).request("GET", "/audit")
    assert trail[0]["token_name"] == "operator" and "done" in trail[0]["result"]


def test_docs_are_served(hub):
    assert "swagger" in httpx.get(hub.url + "/docs").text.lower()
    assert "/agents/{agent_id}/events" in httpx.get(hub.url + "/openapi.json").json()["paths"]


def test_the_docs_need_no_internet(hub):
    """A facility network may have no internet: every script, style and icon of the docs
    page comes from the hub itself."""
    page = "/docs"
    html = httpx.get(hub.url + page).text
    linked = re.findall(r"""(?:src|href|url)\s*[=:(]\s*['"]([^'"]+)['"]""", html)
    assert not [u for u in linked if "//" in u], f"{page} loads from elsewhere: {linked}"
    scripts = [u for u in linked if u.endswith(".js")]
    assert scripts and all(u.startswith("/docs-assets/") for u in scripts), linked
    for url in linked:
        response = httpx.get(hub.url + url)
        assert response.status_code == 200, url
        if url.endswith(".js"):
            assert len(response.content) > 500_000  # the real Swagger UI bundle
    assert "/openapi.json" in linked or "'/openapi.json'" in html or '"/openapi.json"' in html


def test_push_and_read_on_each_database(database, tmp_path):
    """The same flow on SQLite and on a real PostgreSQL server."""
    hub = ThreadHub(HubSettings(database=database))
    try:
        agent, viewer = hub.client(hub.agent), hub.client(hub.viewer)
        batch = [event(i) for i in range(1, 301)]
        agent.request("POST", "/agents/test-pc/events", json={"events": batch[:200]})
        answer = agent.request("POST", "/agents/test-pc/events", json={"events": batch})
        assert (answer["accepted"], answer["duplicates"]) == (100, 200)
        agent.request("POST", "/agents/test-pc/datasets", json={"datasets": [
            dataset(1, "alice", "done", 1), dataset(2, "bob", "error", 2)]})
        agent.request("POST", "/agents/test-pc/heartbeat", json={
            "sent_at": NOW.isoformat(), "interval_s": 5, "status": {"agent_state": "idle"}})
        assert viewer.agents().loc["test-pc", "last_seq"] == 300
        assert len(viewer.events(agent="test-pc", limit=1000)) == 300
        first = viewer.request("GET", "/events", params={"limit": 1})["items"][0]
        assert (first["seq"], first["message"]) == (1, "event 1")
        # times in the hub's answers are UTC with their zone, whatever the database gives
        assert dt.datetime.fromisoformat(first["at"]) == NOW
        assert first["received_at"].endswith("+00:00") and first["at"].endswith("+00:00")
        assert viewer.stats("user")["failures"].tolist() == [0, 1]
        command = hub.client(hub.operator).command("test-pc", "resume", expires_in_s=60)
        assert agent.request("GET", "/agents/test-pc/commands")[0]["id"] == command["id"]
    finally:
        hub.stop()


@pytest.mark.postgres
def test_a_request_waiting_on_postgresql_holds_up_no_other(postgres_url):
    """On PostgreSQL a request's database work runs beside the event loop: a push stuck
    behind a row lock does not stop others from being answered."""
    import threading

    from sqlalchemy import select, text

    from autotx_lib.hub import store as S

    from .conftest import fresh_postgres, wait_for

    hub = ThreadHub(HubSettings(database=fresh_postgres(postgres_url)))
    beat = {"sent_at": S.now().isoformat(), "interval_s": 60, "status": {}}
    agent = hub.client(hub.agent)
    agent.request("POST", "/agents/test-pc/heartbeat", json=beat)
    stuck: list = []
    try:
        with hub.store.engine.connect() as locker:
            locker.begin()
            locker.execute(select(S.agents).where(S.agents.c.id == "test-pc").with_for_update())
            pusher = threading.Thread(target=lambda: stuck.append(
                agent.request("POST", "/agents/test-pc/heartbeat", json=beat)))
            pusher.start()

            def waiting_for_a_lock() -> int:  # a transaction each: the view is a snapshot
                with hub.store.engine.connect() as conn:
                    return conn.execute(text("SELECT count(*) FROM pg_stat_activity "
                                             "WHERE wait_event_type = 'Lock'")).scalar()

            wait_for(waiting_for_a_lock, what="the heartbeat to wait for the row lock")
            answer = httpx.get(f"{hub.url}/agents", timeout=5,
                               headers={"Authorization": f"Bearer {hub.viewer}"})
            assert answer.status_code == 200 and answer.json()[0]["id"] == "test-pc"
            assert not stuck  # still waiting
            locker.rollback()
        pusher.join(10)
        assert stuck and "received_at" in stuck[0]
    finally:
        hub.stop()
