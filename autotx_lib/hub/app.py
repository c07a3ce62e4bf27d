"""The hub's HTTP API (FastAPI): agents push and pull commands; people read and steer.

Every API route needs ``Authorization: Bearer TOKEN`` (only the docs pages are open): 401
without a valid token, 403 with the wrong role. Errors have one shape: ``{"error": {"status": 403, "message": "..."}}``.
List routes answer ``304 Not Modified`` to a matching ``If-None-Match`` (cheap polling),
and events take ``after=`` (the last hub event id seen). OpenAPI docs: ``/docs``
(Swagger UI, its scripts served by the hub itself: no CDN, no internet needed).

Examples
--------
>>> from autotx_lib.hub.settings import HubSettings                  # doctest: +SKIP
>>> app = create_app(HubSettings(database="sqlite://"))     # doctest: +SKIP
>>> uvicorn.run(app, host="127.0.0.1", port=8765)           # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import gc
import hashlib
import json
from typing import Annotated, Any, Literal

from fastapi import Depends, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.engine import Row
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from autotx_lib import __version__
from autotx_lib.errors import HubError
from autotx_lib.hub import auth, stats
from autotx_lib.hub.settings import HubSettings, bind_problem
from autotx_lib.hub.store import COMMAND_ACTIONS, HubStore, as_dict, aware, now

Name = Annotated[str, Field(min_length=1, max_length=255)]
DOCS_ASSETS = "/docs-assets"  # where the docs pages' scripts and styles are served


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EventIn(_Body):
    """One journal event of an agent; ``seq`` is its id in the agent's journal."""

    seq: int = Field(ge=1)
    at: dt.datetime
    level: str = Field(max_length=8)
    kind: str = Field(max_length=32)
    message: str = Field(max_length=20_000)
    dataset_id: int | None = None


class EventBatch(_Body):
    events: list[EventIn] = Field(max_length=5000)


class DeliveryIn(_Body):
    """One destination's copy of a dataset (``[[destinations]]``: one per destination)."""

    destination: Name
    required: bool = True
    state: str = Field(max_length=32)
    attempts: int = 0
    error: str | None = Field(None, max_length=20_000)
    dest_path: str | None = Field(None, max_length=4096)
    delivered_at: dt.datetime | None = None
    next_attempt_at: dt.datetime | None = None


class DatasetIn(_Body):
    """The latest state of one dataset of an agent (an upsert; newer ``updated_at`` wins)."""

    dataset_id: int
    user: Name
    name: Name
    state: str = Field(max_length=32)
    destination: str | None = Field(None, max_length=255)
    total_files: int = 0
    total_bytes: int = 0
    copied_files: int = 0
    copied_bytes: int = 0
    attempts: int = 0
    error: str | None = Field(None, max_length=20_000)
    dest_path: str | None = Field(None, max_length=4096)
    final_path: str | None = Field(None, max_length=4096)
    deliveries: list[DeliveryIn] | None = Field(None, max_length=64)
    created_at: dt.datetime | None = None
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    updated_at: dt.datetime


class DatasetBatch(_Body):
    datasets: list[DatasetIn] = Field(max_length=5000)


class RunIn(_Body):
    """The latest state of one pipeline run of an agent (an upsert keyed by ``run_id``, its
    id in the agent's journal; the row read later, ``observed_at``, wins)."""

    run_id: int
    workflow: Name
    version: str | None = Field(None, max_length=64)
    dataset_id: int | None = None
    dataset_path: str | None = Field(None, max_length=4096)
    user: str | None = Field(None, max_length=255)
    initiator: str | None = Field(None, max_length=255)
    status: str = Field(max_length=16)
    attempts: int = 0
    max_attempts: int | None = None
    error: str | None = Field(None, max_length=20_000)
    rerun_of: int | None = None
    created_at: dt.datetime
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    duration_s: float | None = None
    next_attempt_at: dt.datetime | None = None
    observed_at: dt.datetime


class RunBatch(_Body):
    runs: list[RunIn] = Field(max_length=5000)


class SessionIn(_Body):
    """The latest state of one instrument session of an agent (an upsert keyed by
    ``session_id``; the row read later, ``observed_at``, wins)."""

    session_id: int
    instrument: Name
    user: Name
    project: str | None = Field(None, max_length=255)
    booking: str | None = Field(None, max_length=255)
    note: str | None = Field(None, max_length=20_000)
    started_by: str | None = Field(None, max_length=32)
    started_at: dt.datetime
    last_activity_at: dt.datetime | None = None
    ended_at: dt.datetime | None = None
    end_reason: str | None = Field(None, max_length=32)
    observed_at: dt.datetime


class SessionBatch(_Body):
    sessions: list[SessionIn] = Field(max_length=5000)


class Heartbeat(_Body):
    """What an agent is doing (``status``: :meth:`Status.to_dict`) and its free space."""

    sent_at: dt.datetime
    interval_s: float = Field(gt=0)
    version: str | None = Field(None, max_length=32)
    status: dict[str, Any] = Field(default_factory=dict)
    free_space: dict[str, int | None] = Field(default_factory=dict)


class CommandIn(_Body):
    """A command for an agent: suspend (args: reason), resume, set_bandwidth (args: value,
    MB/s or a rate text, "off", null for the config's), requeue (args: dataset_id)."""

    agent_id: Name
    action: Literal[COMMAND_ACTIONS]  # type: ignore[valid-type]
    args: dict[str, Any] = Field(default_factory=dict)
    expires_in_s: float | None = Field(None, gt=0)


class AckIn(_Body):
    ok: bool
    result: str = Field(max_length=10_000)


class TokenIn(_Body):
    name: Name
    role: Literal[auth.ROLES]  # type: ignore[valid-type]
    agent_id: str | None = Field(None, max_length=255)


# --- plumbing: errors, body size, ETags ----------------------------------------------


def _error(status: int, message: str, headers: dict | None = None,
           **extra: Any) -> JSONResponse:
    return JSONResponse({"error": {"status": status, "message": message, **extra}},
                        status_code=status, headers=headers)


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413 before anything reads them."""

    def __init__(self, app: Any, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"0")
        too_big = _error(413, f"request body over the hub's limit of {self.limit} bytes; "
                         "send smaller batches (or raise max_body_bytes in hub.toml)")
        if declared.isdigit() and int(declared) > self.limit:
            return await too_big(scope, receive, send)
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return None
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                return await too_big(scope, receive, send)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)


def _json(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _encode(data: Any) -> bytes:
    """Compact JSON, times as ISO 8601 text (orjson when installed: several times faster)."""
    try:
        import orjson
    except ImportError:
        return json.dumps(data, default=_json, separators=(",", ":")).encode()
    return orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS)


def respond(request: Request, data: Any) -> Response:
    """JSON with an ETag; 304 when the client already has this exact answer."""
    body = _encode(data)
    tag = '"' + hashlib.sha1(body, usedforsecurity=False).hexdigest() + '"'
    if request.headers.get("if-none-match") == tag:
        return Response(status_code=304, headers={"ETag": tag})
    return Response(body, media_type="application/json", headers={"ETag": tag})


class StoreCalls:
    """The store's methods as coroutines, for the ``async`` routes: ``await db.agents()``.

    On SQLite a call runs right in the event loop (in-process work of a few milliseconds;
    a thread hop would cost more). On a server database it runs in the thread pool: its
    network round trips and commits would otherwise hold up every other request.
    """

    def __init__(self, store: HubStore):
        self._store = store
        self._in_loop = store.engine.dialect.name == "sqlite"

    def __getattr__(self, name: str) -> Any:
        call = getattr(self._store, name)

        async def run(*args: Any, **kwargs: Any) -> Any:
            if self._in_loop:
                return call(*args, **kwargs)
            return await run_in_threadpool(call, *args, **kwargs)

        return run


# --- who is asking ---------------------------------------------------------------------

_bearer = HTTPBearer(auto_error=False)


async def principal(request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None,
                                                       Depends(_bearer)]) -> Row:
    """The valid token of the request; 401 without one."""
    if credentials is None:
        raise HTTPException(401, "no token: send 'Authorization: Bearer TOKEN' (ask the "
                            "hub's admin for one: autotx hub token add)",
                            headers={"WWW-Authenticate": "Bearer"})
    # a token verified in the last few seconds needs no database round trip (nor, on
    # PostgreSQL, a hop to the thread pool): see HubSettings.token_cache_seconds
    token = request.app.state.store.cached_token(credentials.credentials) or \
        await request.app.state.db.token_for(credentials.credentials)
    if token is None:
        raise HTTPException(401, "unknown or revoked token; ask the hub's admin for a "
                            "new one", headers={"WWW-Authenticate": "Bearer"})
    return token


def role(*allowed: str):
    """A dependency: the token, if its role is one of ``allowed`` (else 403)."""
    async def check(token: Annotated[Row, Depends(principal)]) -> Row:
        if token.role not in allowed:
            raise HTTPException(403, f"token {token.name!r} has role {token.role!r}; "
                                f"this needs one of: {', '.join(allowed)}")
        return token
    return check


async def as_agent(agent_id: str, token: Annotated[Row, Depends(principal)]) -> Row:
    """Only the agent itself may push (and acknowledge) as ``agent_id``."""
    if token.role != "agent" or token.agent_id != agent_id:
        raise HTTPException(403, f"token {token.name!r} may not act as agent "
                            f"{agent_id!r}; each agent pushes with its own agent token")
    return token


Reader = Annotated[Row, Depends(role(*auth.READERS))]
Operator = Annotated[Row, Depends(role(*auth.OPERATORS))]
Admin = Annotated[Row, Depends(role("admin"))]
Agent = Annotated[Row, Depends(as_agent)]
Limit = Annotated[int, Query(ge=1, le=1000)]


# --- the app ---------------------------------------------------------------------------


def create_app(settings: HubSettings, store: HubStore | None = None) -> Any:
    """The hub as an ASGI application (FastAPI wrapped in the body-size limit).

    The frequent routes (pushes, commands, the overview) are ``async``; their database
    calls run in the event loop on SQLite and in the thread pool on PostgreSQL (see
    :class:`StoreCalls`). Statistics (pandas) run in the thread pool.

    Parameters
    ----------
    settings : HubSettings
    store : HubStore, optional
        Defaults to ``HubStore(settings.database)`` (tables created if missing).
    """
    store = store or HubStore(settings.database,
                              token_cache_seconds=settings.token_cache_seconds)
    # the API docs (/docs) load Swagger UI from the hub itself, not from a CDN: a facility
    # network may have no internet. No /redoc: ReDoc fetches its logo from its CDN.
    app = FastAPIOffline(title="autotx hub", version=__version__, static_url=DOCS_ASSETS,
                         redoc_url=None,
                  description="The facility's view of its transfer agents. Every route needs "
                  "`Authorization: Bearer TOKEN` (see `autotx hub token add`).")
    db = StoreCalls(store)
    app.state.store, app.state.db, app.state.settings = store, db, settings

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, error: StarletteHTTPException) -> JSONResponse:
        return _error(error.status_code, str(error.detail), headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, error: RequestValidationError) -> JSONResponse:
        problems = [{"where": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]}
                    for e in error.errors()]
        first = problems[0] if problems else {"where": "body", "problem": "invalid"}
        return _error(422, f"invalid request: {first['where']}: {first['problem']}"
                      + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
                      problems=problems)


    # --- agents push --------------------------------------------------------------------

    @app.post("/agents/{agent_id}/heartbeat", tags=["agents push"])
    async def heartbeat(agent_id: str, beat: Heartbeat, _token: Agent) -> dict:
        received = await db.heartbeat(agent_id, beat.model_dump(mode="python"))
        return {"received_at": received.isoformat()}

    @app.post("/agents/{agent_id}/events", tags=["agents push"])
    async def push_events(agent_id: str, batch: EventBatch, _token: Agent) -> dict:
        new, known = await db.add_events(agent_id, [e.model_dump() for e in batch.events])
        return {"accepted": new, "duplicates": known,
                "last_seq": max((e.seq for e in batch.events), default=None)}

    @app.post("/agents/{agent_id}/datasets", tags=["agents push"])
    async def push_datasets(agent_id: str, batch: DatasetBatch, _token: Agent) -> dict:
        rows = [{**d.model_dump(exclude={"deliveries"}),  # JSON-ready: stored as one column
                 "deliveries": None if d.deliveries is None else
                 [c.model_dump(mode="json") for c in d.deliveries]} for d in batch.datasets]
        return {"stored": await db.upsert_datasets(agent_id, rows)}

    @app.post("/agents/{agent_id}/runs", tags=["agents push"])
    async def push_runs(agent_id: str, batch: RunBatch, _token: Agent) -> dict:
        return {"stored": await db.upsert_runs(agent_id, [r.model_dump() for r in batch.runs])}

    @app.post("/agents/{agent_id}/sessions", tags=["agents push"])
    async def push_sessions(agent_id: str, batch: SessionBatch, _token: Agent) -> dict:
        rows = [s.model_dump() for s in batch.sessions]
        return {"stored": await db.upsert_sessions(agent_id, rows)}

    @app.get("/agents/{agent_id}/commands", tags=["commands"])
    async def agent_commands(agent_id: str, token: Annotated[Row, Depends(principal)]) -> list[dict]:
        """An agent's open commands (the agent itself: they become "delivered")."""
        if token.role == "agent":
            await as_agent(agent_id, token)
            return [_command(c) for c in await db.take_commands(agent_id)]
        await role(*auth.READERS)(token)
        return [_command(c) for c in await db.commands(agent_id=agent_id)]

    @app.post("/agents/{agent_id}/commands/{command_id}/ack", tags=["commands"])
    async def ack(agent_id: str, command_id: int, answer: AckIn, token: Agent) -> dict:
        row = await db.ack_command(agent_id, command_id, answer.ok, answer.result)
        if row is None:
            raise HTTPException(409, f"command {command_id} is not an open command of agent "
                                f"{agent_id!r} (already acknowledged, expired or another "
                                "agent's); nothing changed")
        await db.add_audit(row.created_by, f"command-{row.action}", agent_id,
                           row.args, f"{row.state}: {row.result} (acknowledged by {token.name})")
        return _command(row)

    # --- reading the facility -------------------------------------------------------------

    def _agent(row: Row, full: bool = False) -> dict:
        beat = json.loads(row.heartbeat) if row.heartbeat else {}
        status = beat.get("status") or {}
        seen = as_dict(row)["last_seen"]
        silent = (now() - seen).total_seconds()
        lost = silent > settings.lost_after_heartbeats * (row.interval_s or 10.0)
        data = {"id": row.id, "state": "lost" if lost else (row.state or "unknown"),
                "reported_state": row.state, "detail": row.detail, "last_seen": seen,
                "silent_s": round(silent, 3), "clock_offset_s": row.clock_offset_s,
                "interval_s": row.interval_s, "version": row.version,
                "last_seq": row.last_seq, "current": status.get("current"),
                "queue_length": status.get("queue_total", len(status.get("queue") or [])),
                "waiting_length": status.get("waiting_total",
                                             len(status.get("waiting") or [])),
                "suspended": status.get("suspended"), "free_space": beat.get("free_space"),
                "session": status.get("instrument_session")}
        if full:
            data["status"] = status
        return data

    @app.get("/agents", tags=["facility"])
    async def list_agents(request: Request, _token: Reader) -> Response:
        """Every agent: state ("lost" when silent for 3 heartbeats), last seen (hub clock),
        what it copies, queue length, suspension, free space."""
        return respond(request, [_agent(r) for r in await db.agents()])

    @app.get("/agents/{agent_id}", tags=["facility"])
    async def agent_detail(request: Request, agent_id: str, _token: Reader) -> Response:
        row = await db.agent(agent_id)
        if row is None:
            raise HTTPException(404, f"no agent {agent_id!r} has reported to this hub")
        return respond(request, _agent(row, full=True))

    @app.get("/datasets", tags=["facility"])
    async def list_datasets(request: Request, _token: Reader, agent: str | None = None,
                      user: str | None = None, state: str | None = None,
                      since: dt.datetime | None = None, until: dt.datetime | None = None,
                      limit: Limit = 100, offset: Annotated[int, Query(ge=0)] = 0) -> Response:
        """Datasets, newest first; ``since``/``until`` bound when they were claimed."""
        rows, total = await db.datasets(agent_id=agent, user=user, state=state, since=since,
                                        until=until, limit=limit, offset=offset)
        return respond(request, {"items": [as_dict(r) for r in rows], "total": total,
                                 "limit": limit, "offset": offset})

    @app.get("/datasets/{agent_id}/{dataset_id}", tags=["facility"])
    def dataset_detail(agent_id: str, dataset_id: int, _token: Reader) -> dict:
        """One dataset: its latest state, its delivery, its events (agent order), its
        pipeline runs (newest first)."""
        row = store.dataset(agent_id, dataset_id)
        if row is None:
            raise HTTPException(404, f"agent {agent_id!r} has reported no dataset {dataset_id}")
        data = as_dict(row)
        data["deliveries"] = data.get("deliveries") or [  # an agent of one destination
            {k: data[k] for k in ("destination", "dest_path", "state", "finished_at")}]
        data["events"] = [as_dict(e) for e in store.events(agent_id=agent_id,
                                                           dataset_id=dataset_id, limit=1000)]
        data["runs"] = [as_dict(r) for r in store.runs(agent_id=agent_id, dataset_id=dataset_id,
                                                       limit=1000)[0]]
        return data

    @app.get("/runs", tags=["facility"])
    async def list_runs(request: Request, _token: Reader, agent: str | None = None,
                        status: str | None = None, workflow: str | None = None,
                        user: str | None = None, since: dt.datetime | None = None,
                        until: dt.datetime | None = None, limit: Limit = 100,
                        offset: Annotated[int, Query(ge=0)] = 0) -> Response:
        """Pipeline runs, newest first; ``since``/``until`` bound when they were created."""
        rows, total = await db.runs(agent_id=agent, status=status, workflow=workflow,
                                    user=user, since=since, until=until, limit=limit, offset=offset)
        return respond(request, {"items": [as_dict(r) for r in rows], "total": total,
                                 "limit": limit, "offset": offset})

    @app.get("/runs/{agent_id}/{run_id}", tags=["facility"])
    async def run_detail(agent_id: str, run_id: int, _token: Reader) -> dict:
        row = await db.run(agent_id, run_id)
        if row is None:
            raise HTTPException(404, f"agent {agent_id!r} has reported no pipeline run {run_id}")
        return as_dict(row)

    @app.get("/sessions", tags=["facility"])
    async def list_sessions(request: Request, _token: Reader, agent: str | None = None,
                            user: str | None = None,
                            open_only: Annotated[bool, Query(alias="open")] = False,
                            since: dt.datetime | None = None, until: dt.datetime | None = None,
                            limit: Limit = 100,
                            offset: Annotated[int, Query(ge=0)] = 0) -> Response:
        """Instrument sessions, newest first; ``open=true``: only those not ended;
        ``since``/``until`` bound when they started."""
        rows, total = await db.sessions(agent_id=agent, user=user, open_only=open_only,
                                        since=since, until=until, limit=limit,
                                        offset=offset)
        return respond(request, {"items": [as_dict(r) for r in rows], "total": total,
                                 "limit": limit, "offset": offset})

    @app.get("/sessions/{agent_id}/{session_id}", tags=["facility"])
    async def session_detail(agent_id: str, session_id: int, _token: Reader) -> dict:
        row = await db.session(agent_id, session_id)
        if row is None:
            raise HTTPException(404, f"agent {agent_id!r} has reported no session {session_id}")
        return as_dict(row)

    @app.get("/events", tags=["facility"])
    async def list_events(request: Request, _token: Reader, agent: str | None = None,
                    kind: str | None = None, level: str | None = None,
                    after: Annotated[int | None, Query(ge=0)] = None,
                    limit: Limit = 100) -> Response:
        """Events oldest first (one agent: in its own order); poll with ``after=next_after``."""
        rows = await db.events(agent_id=agent, kind=kind, level=level, after=after, limit=limit)
        return respond(request, {"items": [_event(r) for r in rows],
                                 "next_after": max((r.id for r in rows), default=after)})

    @app.get("/stats/{name}", tags=["statistics"])
    def stats_table(request: Request, name: Literal[stats.TABLES],  # type: ignore[valid-type]
                    _token: Reader, since: dt.datetime | None = None) -> Response:
        """day (x agent), user, destination, runs (pipeline runs per day x agent x
        workflow) or errors: records (see autotx_lib.hub.stats)."""
        frame = stats.table(store, name, since)
        records = json.loads(frame.to_json(orient="records", date_format="iso"))
        return respond(request, records)

    # --- commands and audit ------------------------------------------------------------

    @app.post("/commands", tags=["commands"], status_code=201)
    async def send_command(command: CommandIn, token: Operator) -> dict:
        """Queue a command; the agent runs it at its next poll and its result shows here."""
        ttl = command.expires_in_s or settings.command_ttl_seconds
        row = await db.add_command(command.agent_id, command.action, command.args,
                                   token.name, ttl)
        await db.add_audit(token.name, f"command-{command.action}", command.agent_id,
                           json.dumps(command.args), f"queued as command {row.id}")
        return _command(row)

    @app.get("/commands", tags=["commands"])
    async def list_commands(request: Request, _token: Reader, agent: str | None = None,
                      state: str | None = None, limit: Limit = 100) -> Response:
        rows = await db.commands(agent_id=agent, state=state, limit=limit)
        return respond(request, [_command(c) for c in rows])

    @app.get("/commands/{command_id}", tags=["commands"])
    async def command_detail(command_id: int, _token: Reader) -> dict:
        row = await db.command(command_id)
        if row is None:
            raise HTTPException(404, f"no command {command_id}")
        return _command(row)

    @app.get("/audit", tags=["admin"])
    def audit_trail(_token: Admin, limit: Limit = 100) -> list[dict]:
        """Who did what, when, and what came of it (commands, tokens), newest first."""
        return [as_dict(r) for r in store.audit(limit)]

    @app.get("/tokens", tags=["admin"])
    def list_tokens(_token: Admin) -> list[dict]:
        return [as_dict(t, drop=("hash",)) for t in store.tokens()]

    @app.post("/tokens", tags=["admin"], status_code=201)
    def add_token(new: TokenIn, token: Admin) -> dict:
        """Create a token; the answer is the only time it is shown."""
        try:
            secret = store.add_token(new.name, new.role, new.agent_id)
        except ValueError as error:
            raise HTTPException(409, str(error)) from None
        store.add_audit(token.name, "token-add", new.name, new.role, "created")
        return {"name": new.name, "role": new.role, "token": secret}

    @app.delete("/tokens/{name}", tags=["admin"])
    def revoke_token(name: str, token: Admin) -> dict:
        if not store.revoke_token(name):
            raise HTTPException(404, f"no valid token named {name!r}")
        store.add_audit(token.name, "token-revoke", name, None, "revoked")
        return {"revoked": name}

    return BodyLimit(app, settings.max_body_bytes)


def serve(settings: HubSettings, *, insecure: bool = False) -> None:
    """Run the hub with uvicorn until interrupted (one worker).

    Raises
    ------
    HubError
        A non-loopback address without TLS (and without ``insecure``), or half a TLS set-up.
    """
    import uvicorn

    problem = bind_problem(settings, insecure)
    if problem:
        raise HubError(problem)
    config = uvicorn.Config(
        create_app(settings), host=settings.host, port=settings.port,
        ssl_certfile=str(settings.ssl_certfile) if settings.ssl_certfile else None,
        ssl_keyfile=str(settings.ssl_keyfile) if settings.ssl_keyfile else None,
        log_level="warning", access_log=False)  # uvloop and httptools when installed
    config.load()
    # Everything loaded so far (FastAPI, pydantic, SQLAlchemy: ~100,000 objects) lives as
    # long as the hub. Freezing it keeps the collector's full passes, which would walk it
    # all (100-300 ms on a busy machine, with the event loop stopped), to the
    # requests' own objects.
    gc.collect()
    gc.freeze()
    uvicorn.Server(config).run()


def init_hub(settings: HubSettings, name: str = "admin") -> str:
    """Create the hub's database and its first admin token; returns the token.

    Raises
    ------
    HubError
        The database already has tokens (initialised before).
    """
    store = HubStore(settings.database)
    try:
        if store.tokens():
            raise HubError("this hub database is initialised already; add tokens with "
                           "`autotx hub token add NAME --role admin`")
        token = store.add_token(name, "admin")
        store.add_audit("(hub init)", "token-add", name, "admin", "created")
        return token
    finally:
        store.close()


def _event(row: Row) -> dict:
    """An event row as a dict (``as_dict``, less general: dashboards poll for up to 1,000)."""
    data = row._asdict()
    data["at"], data["received_at"] = aware(row.at), aware(row.received_at)
    return data


def _command(row: Row) -> dict:
    data = as_dict(row)
    data["args"] = json.loads(row.args or "{}")
    return data


__all__ = ["create_app", "serve", "init_hub", "Heartbeat", "EventIn", "DatasetIn", "RunIn",
           "SessionIn", "CommandIn", "AckIn"]
