"""A snapshot of the agent's state, read from the journal (never from the agent's memory).

So it works from any process: the CLI, a notebook, a dashboard watching an agent that
runs elsewhere.

Examples
--------
>>> from autotx_lib.transfer.status import status        # doctest: +SKIP
>>> s = status(config)                                    # doctest: +SKIP
>>> s.current.percent, s.queue_df().head()                # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from autotx_lib import journal as J
from autotx_lib.config import Config
from autotx_lib.journal import Journal, as_utc, utcnow
from autotx_lib.transfer import control

if TYPE_CHECKING:
    import pandas as pd

HEARTBEAT_STALE_SECONDS = 120
LIVE_PROGRESS_STALE_SECONDS = 10.0
LIVE_PROGRESS_KEY = "live_progress"  # written by the agent about once a second while copying
WAITING_KEY = "waiting"  # written by the agent at every scan of incoming/


@dataclass(frozen=True)
class DeliveryStatus:
    """A dataset's copy at one destination (several destinations configured)."""

    destination: str
    required: bool
    state: str  # pending, copying, delivered
    dest_path: str | None
    delivered_at: dt.datetime | None
    next_attempt_at: dt.datetime | None
    error: str | None

    def describe(self) -> str:
        """``backup: pending (optional), next attempt 14:05: <error>`` and the like."""
        text = f"{self.destination}: {self.state}" + ("" if self.required else " (optional)")
        if self.state != "delivered" and self.next_attempt_at is not None:
            text += f", next attempt {self.next_attempt_at.astimezone():%H:%M}"
        if self.state != "delivered" and self.error:
            text += f": {self.error}"
        return text


@dataclass(frozen=True)
class DatasetStatus:
    """One dataset as the journal knows it."""

    id: int
    user: str
    name: str
    state: str
    total_files: int
    total_bytes: int
    copied_files: int
    copied_bytes: int
    attempts: int
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    next_attempt_at: dt.datetime | None
    dest_path: str | None
    final_path: str | None
    manifest_path: str | None
    algorithm: str
    error: str | None
    live_rate: float | None = None  # bytes/s over the last seconds, while it is copied
    paused: str | None = None  # why the copy is paused now (gate, suspension)
    deliveries: list[DeliveryStatus] = field(default_factory=list)  # one per destination

    def destinations_line(self) -> str:
        """Each destination's state on one line (empty with a single destination)."""
        if len(self.deliveries) < 2:
            return ""
        return "; ".join(d.describe() for d in self.deliveries)

    @property
    def percent(self) -> float:
        """Bytes copied, in percent of the dataset's size."""
        return 100.0 * self.copied_bytes / self.total_bytes if self.total_bytes else 0.0

    @property
    def rate_bytes_per_s(self) -> float | None:
        """The copy rate: over the last seconds while copying, else the mean since the copy
        started; None before it started and while paused."""
        if self.started_at is None or self.paused:
            return None
        if self.live_rate is not None and self.finished_at is None:
            return self.live_rate
        end = self.finished_at or utcnow()
        seconds = (end - self.started_at).total_seconds()
        return self.copied_bytes / seconds if seconds > 0 else None

    @property
    def eta_seconds(self) -> float | None:
        """Seconds left at the current rate (None when unknown or paused)."""
        rate = self.rate_bytes_per_s
        if not rate or self.finished_at is not None:
            return None
        return (self.total_bytes - self.copied_bytes) / rate

    @property
    def verified(self) -> bool:
        """Delivered and verified (every file's hash matched)."""
        return self.state == J.DONE


@dataclass(frozen=True)
class EventStatus:
    """One journal event."""

    at: dt.datetime
    level: str
    kind: str
    message: str
    dataset_id: int | None


@dataclass(frozen=True)
class JobStatus:
    """One post-delivery job (journal ``jobs`` row): what ran after a dataset arrived."""

    id: int
    kind: str
    state: str  # created, started, finished, error, cancelled
    dataset_id: int | None
    attempts: int
    error: str | None
    duration_s: float | None
    created_at: dt.datetime
    finished_at: dt.datetime | None
    next_attempt_at: dt.datetime | None  # set while a failed job waits for its retry

    @classmethod
    def from_row(cls, row) -> JobStatus:
        return cls(**{name: getattr(row, name) for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class WaitingStatus:
    """A folder in incoming/ that is not claimed yet, and what it waits for.

    ``until`` is when the wait ends at the earliest, if known (e.g. the quiet period).
    """

    user: str
    name: str
    path: str
    reason: str
    until: dt.datetime | None = None


@dataclass(frozen=True)
class Status:
    """What the agent is doing and has done, as plain data.

    ``agent_state`` is idle, scanning, transferring, stopped or ``not running`` (no
    heartbeat for two minutes); ``current`` is the dataset being copied, if any.
    """

    agent_state: str
    agent_detail: str | None
    current: DatasetStatus | None
    queue: list[DatasetStatus] = field(default_factory=list)
    suspended: str | None = None  # the manual suspension's reason, by whom and since when
    history: list[DatasetStatus] = field(default_factory=list)
    events: list[EventStatus] = field(default_factory=list)
    jobs: list[JobStatus] = field(default_factory=list)  # newest first
    waiting: list[WaitingStatus] = field(default_factory=list)  # not claimed yet, and why

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (datetimes as ISO strings in UTC, with their zone)."""
        def convert(value: Any) -> Any:
            if isinstance(value, dt.datetime):
                aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
                return aware.isoformat()
            if isinstance(value, dict):
                return {k: convert(v) for k, v in value.items()}
            if isinstance(value, list):
                return [convert(v) for v in value]
            return value

        data = asdict(self)
        if self.current is not None:
            data["current"].update(percent=self.current.percent,
                                   rate_bytes_per_s=self.current.rate_bytes_per_s,
                                   eta_seconds=self.current.eta_seconds)
        return convert(data)

    def queue_df(self) -> pd.DataFrame:
        """The queue as a pandas DataFrame (one row per dataset)."""
        return _frame(self.queue)

    def history_df(self) -> pd.DataFrame:
        """Finished datasets (done, unmatched, error), newest first, as a DataFrame."""
        return _frame(self.history)

    def waiting_df(self) -> pd.DataFrame:
        """Folders in incoming/ not claimed yet, with what each waits for, as a DataFrame."""
        import pandas as pd

        return pd.DataFrame([asdict(w) for w in self.waiting],
                            columns=list(WaitingStatus.__dataclass_fields__))

    def events_df(self) -> pd.DataFrame:
        """Recent events, newest first, as a DataFrame."""
        import pandas as pd

        return pd.DataFrame([asdict(e) for e in self.events],
                            columns=["at", "level", "kind", "message", "dataset_id"])


def _frame(rows: list[DatasetStatus]) -> pd.DataFrame:
    import pandas as pd

    columns = list(DatasetStatus.__dataclass_fields__)
    frame = pd.DataFrame([asdict(r) for r in rows], columns=columns)
    frame["percent"] = [r.percent for r in rows]
    frame["deliveries"] = [r.destinations_line() for r in rows]  # readable in a notebook
    return frame


def _dataset(row, live: dict | None = None, paused: str | None = None,
             deliveries: list | None = None) -> DatasetStatus:
    fields = {name: getattr(row, name) for name in DatasetStatus.__dataclass_fields__
              if name not in ("live_rate", "paused", "deliveries")}
    fields["deliveries"] = [DeliveryStatus(d.destination, d.required, d.state, d.dest_path,
                                           d.delivered_at, d.next_attempt_at, d.error)
                            for d in deliveries or []]
    if row.state == J.COPYING:
        fields["paused"] = paused
        if live and live.get("dataset_id") == row.id and _fresh(live.get("at")):
            fields["live_rate"] = live.get("rate_bytes_per_s")
            fields["copied_bytes"] = max(row.copied_bytes, live.get("copied_bytes") or 0)
    return DatasetStatus(**fields)


def _no_journal_yet(url: str) -> bool:
    """A SQLite journal whose file does not exist yet (the agent never ran)."""
    if not url.startswith("sqlite"):
        return False
    from pathlib import Path

    from sqlalchemy.engine import make_url

    database = make_url(url).database
    return bool(database) and database != ":memory:" and not Path(database).exists()


def _parse_utc(text: str | None) -> dt.datetime | None:
    """ISO text from the journal as aware UTC (text without a zone is UTC)."""
    if not text:
        return None
    return as_utc(dt.datetime.fromisoformat(text))


def _fresh(at: str | None, seconds: float = LIVE_PROGRESS_STALE_SECONDS) -> bool:
    when = _parse_utc(at)
    return when is not None and (utcnow() - when).total_seconds() < seconds


def status(source: Config | Journal, *, history: int = 20, events: int = 30,
           jobs: int = 10) -> Status:
    """Read the agent's status from its journal.

    Parameters
    ----------
    source : Config or Journal
        The agent's configuration (its journal is opened) or an open journal.
    history, events, jobs : int
        How many finished datasets, events and post-delivery jobs to include.

    Returns
    -------
    status : Status
    """
    if isinstance(source, Config) and _no_journal_yet(source.journal_url):
        return Status("never started", "no journal yet: the agent creates it when it first "
                      "starts (`autotx run`)", None)
    journal = source if isinstance(source, Journal) else \
        Journal(source.journal_url, readonly=True)  # reading runs no DDL, writes nothing
    session = journal.last_session()
    paused = session.state_reason if session is not None and session.ended_at is None and \
        session.state == "paused" else None
    live = journal.get_setting(LIVE_PROGRESS_KEY) or {}
    active_rows = journal.datasets_in(J.ACTIVE_STATES)
    finished_rows = [r for r in journal.all_datasets(limit=history * 3)
                     if r.state in J.FINAL_STATES][:history] if history > 0 else []
    copies = journal.deliveries_for([r.id for r in active_rows + finished_rows])
    active = [_dataset(r, live, paused, copies[r.id]) for r in active_rows]
    current = next((d for d in active if d.state in (J.COPYING, J.DELIVERING)), None)
    finished = [_dataset(r, deliveries=copies[r.id]) for r in finished_rows]
    recent = [EventStatus(e.at, e.level, e.kind, e.message, e.dataset_id)
              for e in journal.recent_events(events)]
    if session is None:
        agent_state, detail = "never started", None
    elif session.ended_at is not None:
        agent_state, detail = "stopped", f"at {session.ended_at:%Y-%m-%d %H:%M:%S} UTC"
    elif (utcnow() - session.heartbeat_at).total_seconds() > HEARTBEAT_STALE_SECONDS:
        agent_state, detail = "not running", (f"no sign of life since "
                                              f"{session.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC")
    else:
        agent_state, detail = session.state, session.state_reason
    recent_jobs = [JobStatus.from_row(r) for r in journal.recent_jobs(jobs)] if jobs else []
    manual = control.suspension(journal)
    suspended = (f"{manual.reason} (by {manual.by} since {manual.since:%Y-%m-%d %H:%M} UTC)"
                 if manual else None)
    waiting = [WaitingStatus(w["user"], w["name"], w["path"], w["reason"],
                             _parse_utc(w.get("until")))
               for w in journal.get_setting(WAITING_KEY) or []]
    if journal is not source:
        journal.close()
    return Status(agent_state, detail, current, [d for d in active if d is not current],
                  suspended=suspended, history=finished, events=recent, jobs=recent_jobs,
                  waiting=waiting)
