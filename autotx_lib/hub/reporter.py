"""The agent's side of the hub: push what happened, pull what to do.

A :class:`Reporter` runs in its own thread beside the agent (:func:`start_reporter`).
Every ``[hub] interval_seconds`` it

1. sends a heartbeat: the status snapshot (:func:`autotx_lib.transfer.status.status`), the
   instrument's open session, if any, and the free space of each destination (an
   ``smb://`` share's as the agent last measured it, see :meth:`Reporter._free_space`);
2. pushes the journal's events with an id above a cursor kept in the journal's settings
   (``hub_event_cursor``), oldest first, in batches; the cursor moves only once the hub
   acknowledged a batch, and the hub keys events by (agent id, event id), so a push
   repeated after a crash or a lost answer is stored once. The journal's append-only
   ``events`` table *is* the outbox;
3. pushes the current rows of datasets changed since the last push (upserts, idempotent);
4. pushes the journal's pipeline runs and instrument sessions: each new one once, and each
   one that had not ended again whenever it changed, until it has ended (upserts keyed by
   the journal's id; the cursor and the not-ended ones' fingerprints are the journal
   settings ``hub_run_cursor`` and ``hub_session_cursor``);
5. fetches its open commands, runs them (suspend, resume, set_bandwidth, requeue) and
   acknowledges each with its result.

While a dataset is being copied, steps 2 to 4 run every :data:`COPYING_PUSH_EVERY`
rounds only (the heartbeat carries the copy's progress; each push costs the copying agent
CPU and journal writes); when the agent stops, one last round pushes everything.

The agent never waits for any of this: a hub that is down, slow or unreachable only delays
the reports, which all arrive when it is back. A batch the hub refuses as malformed (4xx)
is split down to the single offending items, whose ids are kept in the journal setting
``hub_rejected`` for inspection; the rest goes through.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import threading
from typing import Any

from autotx_lib import __version__
from autotx_lib import journal as J
from autotx_lib.config import Config
from autotx_lib.errors import AutotxError, HubError
from autotx_lib.hub.client import HubClient
from autotx_lib.journal import Journal

log = logging.getLogger("autotx_lib.hub")

EVENT_CURSOR_KEY = "hub_event_cursor"  # id of the last journal event the hub acknowledged
DATASET_CURSOR_KEY = "hub_dataset_cursor"  # updated_at (ISO) of the last dataset pushed
REJECTED_KEY = "hub_rejected"  # {"events": [...], "datasets": [...], "last": "why"}
# {"after": last run id pushed, "open": {id: fingerprint}, "observed": time of that push}
RUN_CURSOR_KEY = "hub_run_cursor"
SESSION_CURSOR_KEY = "hub_session_cursor"  # the same for instrument sessions
COMMAND_KEY = "hub_last_command"  # {"id", "ok", "result"} of the last command carried out
BATCH = 500
#: While a copy runs, the journal's records go to the hub every this many rounds (the
#: heartbeat, with the copy's progress, and the commands every round).
COPYING_PUSH_EVERY = 4
LISTED = 50  # queue and waiting entries sent in a heartbeat (the totals are sent too)
# Rows updated in another transaction may commit a little after a later timestamp:
# each pass looks this far back again (upserts make a second push harmless).
DATASET_OVERLAP = dt.timedelta(seconds=5)
# PostgreSQL may commit event ids out of order: events younger than this wait a pass.
SETTLE = dt.timedelta(seconds=2)
#: A share's free space measured longer ago than this (two of the agent's hourly
#: housekeeping rounds) is reported as unknown.
FREE_SPACE_MAX_AGE = dt.timedelta(hours=2)


def read_token(config: Config) -> str:
    """The agent's hub token, from ``[hub] token_file`` or ``token_env``."""
    link = config.hub
    if link.token_file is not None:
        try:
            token = link.token_file.read_text(encoding="utf-8").strip()
        except OSError as error:
            raise HubError(f"cannot read the hub token file {link.token_file}: "
                           f"{error.strerror}; create it with the token from `autotx hub "
                           "token add`") from None
    else:
        token = os.environ.get(link.token_env or "", "").strip()
    if not token:
        raise HubError(f"no hub token in {link.token_file or '$' + str(link.token_env)}; put "
                       "the agent's token there (`autotx hub token add NAME --role agent`)")
    return token


def _utc(value: dt.datetime | None) -> str | None:
    """A journal time (aware, or naive UTC) as ISO text with its zone."""
    return None if value is None else J.as_utc(value).isoformat()


class Reporter:
    """Reports one agent's journal to the hub and carries out the hub's commands.

    Parameters
    ----------
    config : Config
        The agent's configuration (``[hub]`` must have a ``url``).
    journal : Journal
        The agent's journal (the outbox and the cursors live there).
    token : str, optional
        Default: :func:`read_token`.
    """

    def __init__(self, config: Config, journal: Journal, *, token: str | None = None):
        if not config.hub.url:
            raise HubError("the configuration has no [hub] url")
        self.config, self.journal = config, journal
        self.agent_id = config.hub.agent_id or config.host_alias
        self._token = token or read_token(config)  # a missing token: an error right here
        self._client: HubClient | None = None
        self._base = f"/agents/{self.agent_id}"
        self._outage = False
        self._deferred = 0  # rounds in a row that pushed only the heartbeat (a copy ran)

    @property
    def client(self) -> HubClient:
        """The HTTP client, made at first use: in the reporter's thread, not in the agent's
        (a TLS client loads the system's certificates, tens to hundreds of ms)."""
        if self._client is None:
            hub = self.config.hub
            self._client = HubClient(hub.url, self._token, timeout=hub.timeout_seconds,
                                     verify=str(hub.ca_file) if hub.ca_file else True)
        return self._client

    def close(self) -> None:
        """Close the connections to the hub."""
        if self._client is not None:
            self._client.close()

    # --- one round ---------------------------------------------------------------------

    def report_once(self, *, defer_while_copying: bool = False) -> dict[str, int]:
        """Heartbeat, events, datasets, runs, sessions, commands; returns how many of each
        went through.

        Parameters
        ----------
        defer_while_copying : bool
            While a dataset is being copied, send only the heartbeat (with the copy's
            progress) and take the commands; push the journal's records every
            :data:`COPYING_PUSH_EVERY` rounds only (what the loop of :meth:`run` does:
            each round costs the agent CPU and journal writes, and the heartbeat already
            shows what the copy does).

        Raises
        ------
        HubError
            The hub cannot be reached or refused the token (nothing is lost: the next
            round sends it all).
        """
        copying = self.heartbeat()
        if defer_while_copying and copying and self._deferred < COPYING_PUSH_EVERY - 1:
            self._deferred += 1
            return {"events": 0, "datasets": 0, "runs": 0, "sessions": 0,
                    "commands": self.run_commands()}
        self._deferred = 0
        return {"events": self.push_events(), "datasets": self.push_datasets(),
                "runs": self.push_runs(), "sessions": self.push_sessions(),
                "commands": self.run_commands()}

    def run(self, stop: threading.Event) -> None:
        """Report every ``interval_seconds`` until ``stop`` is set, then once more (what
        happened while the agent stopped); never raises."""
        while True:
            last = stop.is_set()
            try:
                self.report_once(defer_while_copying=not last)
                if self._outage:
                    log.warning("the hub at %s answers again", self.config.hub.url)
                self._outage = False
            except HubError as error:
                # said once per outage: the journal keeps everything until the hub is back
                (log.debug if self._outage else log.warning)("%s", error)
                self._outage = True
            except Exception:  # a reporting bug must never stop the agent
                log.exception("reporting to the hub failed; trying again")
            if last:
                break
            stop.wait(self.config.hub.interval_seconds)
        self.close()

    # --- heartbeat ---------------------------------------------------------------------

    def heartbeat(self) -> bool:
        """Send the status snapshot and the free space of each destination; returns
        whether a dataset is being copied.

        The snapshot is the agent's state, its current dataset and queue (what the hub
        shows); no events (pushed on their own) and nothing from the old ``jobs`` table
        (pipeline runs, OMERO import included, are pushed from the pipelines engine's).
        """
        from autotx_lib.transfer.status import status

        # history=1: status() reads the three newest datasets for it (0 would read them all)
        snapshot = status(self.journal, history=1, events=0, jobs=0).to_dict()
        for key in ("queue", "waiting"):
            snapshot[f"{key}_total"] = len(snapshot[key])
            snapshot[key] = snapshot[key][:LISTED]
        snapshot["instrument_session"] = self._instrument_session()
        self.client.request("POST", f"{self._base}/heartbeat", json={
            "sent_at": dt.datetime.now(dt.UTC).isoformat(),
            "interval_s": self.config.hub.interval_seconds, "version": __version__,
            "status": snapshot, "free_space": self._free_space()})
        return snapshot["current"] is not None

    def _instrument_session(self) -> dict[str, Any] | None:
        """The instrument's open session (who is at the microscope), if any."""
        from dataclasses import asdict

        from autotx_lib.transfer.sessions import current_session

        session = current_session(self.journal, self.config.host_alias)
        if session is None:
            return None
        return {k: _utc(v) if isinstance(v, dt.datetime) else v
                for k, v in asdict(session).items()}

    def _free_space(self) -> dict[str, int | None]:
        """Free bytes per destination (by its alias, or each [[destinations]] entry by its
        name) and per watched folder; None: unknown.

        A folder is measured now (None when unmounted). An ``smb://`` share is not asked
        at every heartbeat: its value is the one the agent measured last, through its own
        connection (:mod:`~autotx_lib.transfer.destinations.free_space`: at its hourly
        housekeeping, which waits while a dataset is being copied, and before each copy to
        a share that has a free-space floor), so it is usually up to an hour old; None when
        none was measured within :data:`FREE_SPACE_MAX_AGE`.
        """
        from autotx_lib.transfer.destinations.free_space import last_free_space

        if self.config.destinations:
            places = {t.name: t.local_path for t in self.config.targets}
        else:
            places = {self.config.destination_alias: self.config.destination}
        places.update({str(c.path): c.path for c in self.config.space_monitoring})
        measured = last_free_space(self.journal, FREE_SPACE_MAX_AGE) \
            if None in places.values() else {}
        free: dict[str, int | None] = {}
        for name, path in places.items():
            if path is None:  # a share: what the agent measured
                free[name] = measured[name].free_bytes if name in measured else None
                continue
            try:
                free[name] = shutil.disk_usage(path).free
            except OSError:
                free[name] = None  # unmounted: the hub shows it as unknown
        return free

    # --- events (the outbox) -------------------------------------------------------------

    def push_events(self) -> int:
        """Push every journal event above the cursor; returns how many the hub took."""
        sent = 0
        while True:
            cursor = self.journal.get_setting(EVENT_CURSOR_KEY) or 0
            settled = None if self.journal.engine.dialect.name == "sqlite" else \
                J.utcnow() - SETTLE
            rows = self.journal.events_after(cursor, BATCH, settled)
            if not rows:
                return sent
            sent += self._push("events", [_event(r) for r in rows], lambda e: e["seq"])
            self.journal.set_setting(EVENT_CURSOR_KEY, rows[-1].id)
            if len(rows) < BATCH:
                return sent

    def _push(self, kind: str, items: list[dict], key) -> int:
        """POST items; a 4xx refusal is narrowed down to the refused items, kept aside."""
        try:
            self.client.request("POST", f"{self._base}/{kind}", json={kind: items})
            return len(items)
        except HubError as error:
            if error.status is None or error.status in (401, 403) or error.status >= 500:
                raise  # unreachable, or the token: nothing moves, all is sent later
            if len(items) > 1:
                middle = len(items) // 2
                return (self._push(kind, items[:middle], key)
                        + self._push(kind, items[middle:], key))
            self._reject(kind, key(items[0]), str(error))
            return 0

    def _reject(self, kind: str, item_id: int, why: str) -> None:
        rejected = self.journal.get_setting(REJECTED_KEY) or {"events": [], "datasets": []}
        rejected.setdefault(kind, []).append(item_id)
        rejected["last"] = why
        self.journal.set_setting(REJECTED_KEY, rejected)
        log.error("the hub refused %s %s (kept in the journal, setting %s): %s",
                  kind[:-1], item_id, REJECTED_KEY, why)

    # --- datasets ----------------------------------------------------------------------

    def push_datasets(self) -> int:
        """Push the rows of datasets changed since the last push; returns how many."""
        cursor = self.journal.get_setting(DATASET_CURSOR_KEY)
        start = (dt.datetime.fromisoformat(cursor) - DATASET_OVERLAP) if cursor \
            else dt.datetime(1970, 1, 1)
        sent, last = 0, (start, 0)
        while True:
            rows = self.journal.datasets_changed_after(start, last, BATCH)
            if not rows:
                return sent
            copies = self.journal.deliveries_for([r.id for r in rows])
            sent += self._push("datasets", [self._dataset(r, copies[r.id]) for r in rows],
                               lambda d: d["dataset_id"])
            last = (rows[-1].updated_at, rows[-1].id)
            self.journal.set_setting(DATASET_CURSOR_KEY, last[0].isoformat())

    def _dataset(self, row, copies: list) -> dict[str, Any]:
        return {"dataset_id": row.id, "user": row.user, "name": row.name, "state": row.state,
                "destination": self.config.destination_alias,
                "deliveries": [_delivery(d) for d in copies] or None,
                **{k: getattr(row, k) for k in ("total_files", "total_bytes", "copied_files",
                                                "copied_bytes", "attempts", "error",
                                                "dest_path", "final_path")},
                **{k: _utc(getattr(row, k)) for k in ("created_at", "started_at",
                                                      "finished_at", "updated_at")}}

    # --- pipeline runs and instrument sessions -------------------------------------------

    def push_runs(self) -> int:
        """Push new pipeline runs and those changed since their last push; returns how many."""
        from autotx_lib.journal.pipeline_runs import OPEN_STATES, PipelineStore

        runs = PipelineStore(self.journal)
        return self._push_records(
            "runs", RUN_CURSOR_KEY, runs.runs_after, runs.unended_runs, _run,
            lambda r: r.status in OPEN_STATES or r.next_attempt_at is not None)

    def push_sessions(self) -> int:
        """Push new instrument sessions and those changed since their last push; returns
        how many."""
        from autotx_lib.journal.instrument_sessions import SessionStore

        sessions = SessionStore(self.journal)
        return self._push_records("sessions", SESSION_CURSOR_KEY, sessions.sessions_after,
                                  sessions.unended_sessions, _session,
                                  lambda r: r.ended_at is None)

    def _push_records(self, kind: str, key: str, read_after, read_unended, item,
                      unended) -> int:
        """Push records that change until they end (runs, sessions).

        New records (id above the cursor) go once each; a record that had not ended when
        pushed is pushed again whenever its fingerprint changes, the last time when it has
        ended. The cursor and fingerprints move only after the hub acknowledged a batch.
        """
        state = self.journal.get_setting(key) or {"after": 0, "open": {}}
        after, known = state["after"], {int(k): v for k, v in state["open"].items()}
        # when these rows were read: the hub keeps the latest observation of a record, so
        # it never goes back, even when the clock does (a step back of the agent's clock)
        now = dt.datetime.now(dt.UTC)
        before = dt.datetime.fromisoformat(state.get("observed") or now.isoformat())
        observed = max(now, before + dt.timedelta(milliseconds=1)).isoformat()

        def send(rows: list) -> int:
            items = [item(r) for r in rows]
            sent = self._push(kind, [{**i, "observed_at": observed} for i in items],
                              lambda d: d[f"{kind[:-1]}_id"])
            for row, pushed in zip(rows, items, strict=True):
                known.pop(row.id, None)
                if unended(row):
                    known[row.id] = _fingerprint(pushed)
            return sent

        def save() -> None:
            self.journal.set_setting(key, {"after": after, "open": known,
                                           "observed": observed})

        changed = [r for r in read_unended(list(known)) if r.id <= after
                   and (r.id not in known or _fingerprint(item(r)) != known[r.id])]
        sent = 0
        for start in range(0, len(changed), BATCH):
            sent += send(changed[start:start + BATCH])
            save()
        settled = None if self.journal.engine.dialect.name == "sqlite" else \
            J.utcnow() - SETTLE
        while rows := read_after(after, BATCH, settled):
            sent += send(rows)
            after = rows[-1].id
            save()
            if len(rows) < BATCH:
                break
        return sent

    # --- commands ----------------------------------------------------------------------

    def run_commands(self) -> int:
        """Carry out the hub's open commands for this agent, each once; returns how many."""
        done = 0
        for command in self.client.request("GET", f"{self._base}/commands"):
            last = self.journal.get_setting(COMMAND_KEY) or {"id": 0}
            if command["id"] <= last["id"]:  # carried out before; only the answer was lost
                ok, result = (last["ok"], last["result"]) if command["id"] == last["id"] \
                    else (True, "carried out before")
                result = f"{result} (acknowledged again; not run twice)"
            else:
                ok, result = self.execute(command)
                self.journal.set_setting(COMMAND_KEY, {"id": command["id"], "ok": ok,
                                                       "result": result})
                done += 1
            try:
                self.client.request("POST", f"{self._base}/commands/{command['id']}/ack",
                                    json={"ok": ok, "result": result})
            except HubError as error:
                if error.status != 409:  # 409: already acknowledged or expired meanwhile
                    raise
        return done

    def execute(self, command: dict[str, Any]) -> tuple[bool, str]:
        """Run one command through the same functions as the CLI; (ok, what happened)."""
        from autotx_lib.transfer import control
        from autotx_lib.transfer.requeue import requeue

        action, args = command["action"], command.get("args") or {}
        who = f"from the hub by {command.get('created_by', '?')}"
        try:
            if action == "suspend":
                reason = f"{args.get('reason') or 'suspended'} ({who})"
                control.suspend(self.journal, reason, replace=True)
                return True, f"suspended: {reason}"
            if action == "resume":
                lifted = control.resume(self.journal)
                return True, "resumed" if lifted else "was not suspended"
            if action == "set_bandwidth":
                control.set_bandwidth(self.journal, args.get("value"))
                return True, f"bandwidth: {control.describe_bandwidth(args.get('value'))}"
            if action == "requeue":
                done = requeue(self.config, int(args["dataset_id"]), journal=self.journal)
                return True, "; ".join([f"requeued to {done.target}", *done.warnings])
            return False, f"unknown action {action!r}; this agent knows suspend, resume, " \
                "set_bandwidth, requeue"
        except (AutotxError, ValueError, KeyError, TypeError) as error:
            return False, f"{error.__class__.__name__}: {error}"


def _event(row) -> dict[str, Any]:
    return {"seq": row.id, "at": _utc(row.at), "level": row.level, "kind": row.kind,
            "message": row.message, "dataset_id": row.dataset_id}


def _times(row, names: tuple[str, ...]) -> dict[str, str | None]:
    return {k: _utc(getattr(row, k)) for k in names}


def _delivery(row) -> dict[str, Any]:
    """One (dataset, destination) copy as the hub stores it."""
    return {"destination": row.destination, "required": bool(row.required), "state": row.state,
            "attempts": row.attempts, "error": row.error, "dest_path": row.dest_path,
            "delivered_at": _utc(row.delivered_at), "next_attempt_at": _utc(row.next_attempt_at)}

def _run(row) -> dict[str, Any]:
    return {"run_id": row.id, **{k: getattr(row, k) for k in (
        "workflow", "version", "dataset_id", "dataset_path", "user", "initiator", "status",
        "attempts", "max_attempts", "error", "rerun_of", "duration_s")},
        **_times(row, ("created_at", "started_at", "finished_at", "next_attempt_at"))}


def _session(row) -> dict[str, Any]:
    return {"session_id": row.id, **{k: getattr(row, k) for k in (
        "instrument", "user", "project", "booking", "note", "started_by", "end_reason")},
        **_times(row, ("started_at", "last_activity_at", "ended_at"))}


def _fingerprint(item: dict[str, Any]) -> str:
    """A short digest of what was pushed (to push a record again only when it changed)."""
    text = json.dumps(item, sort_keys=True, default=str)
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:16]


def start_reporter(config: Config, journal: Journal,
                   stop: threading.Event) -> threading.Thread | None:
    """Start reporting to the hub in a daemon thread (None when ``[hub]`` has no url).

    The agent calls this when it starts and sets ``stop`` when it stops (the thread then
    reports once more and ends; join it with a timeout, the hub may be unreachable). A
    missing token is logged and recorded in the journal; transfers go on without the hub.
    """
    if not config.hub.url:
        return None
    try:
        reporter = Reporter(config, journal)
    except HubError as error:
        log.error("%s", error)
        journal.log("error", "hub", f"not reporting to the hub: {error}")
        return None
    thread = threading.Thread(target=reporter.run, args=(stop,), name="autotx-hub-reporter",
                              daemon=True)
    thread.start()
    return thread


__all__ = ["Reporter", "start_reporter", "read_token", "COPYING_PUSH_EVERY", "EVENT_CURSOR_KEY",
           "FREE_SPACE_MAX_AGE",
           "DATASET_CURSOR_KEY", "RUN_CURSOR_KEY", "SESSION_CURSOR_KEY", "REJECTED_KEY",
           "COMMAND_KEY"]
