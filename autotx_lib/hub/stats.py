"""Facility statistics from the hub's datasets, pipeline runs and events, as pandas
DataFrames.

Like the ESRF workflow tables: per day x instrument, per user, per destination (datasets,
bytes, files, failures, median copy rate, median time from ready to delivered); pipeline
runs per day x instrument x workflow (runs, finished, failures, still open, median and
total duration); and error statistics per kind of event.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from autotx_lib.hub.store import HubStore, aware

if TYPE_CHECKING:
    import pandas as pd

TABLES = ("day", "user", "destination", "runs", "errors")
_GROUPS = {"day": ["day", "agent_id"], "user": ["user"], "destination": ["destination"]}
_COLUMNS = ["datasets", "bytes", "files", "failures", "median_rate_mb_s",
            "median_ready_to_delivered_s"]


def _per_destination(rows: list[dict]) -> list[dict]:
    """One row per (dataset, destination) for agents that report their deliveries: done
    when that copy was delivered (at ``delivered_at``), failed when the dataset was
    quarantined or that copy waits after an error. A copy delivered after the dataset
    finished (an optional destination catching up) has no copy rate."""
    out = []
    for row in rows:
        for copy in row.get("deliveries") or [None]:
            if copy is None:
                out.append(row)
                continue
            delivered_at = dt.datetime.fromisoformat(copy["delivered_at"]) \
                if copy.get("delivered_at") else None
            done = copy["state"] == "delivered"
            later = done and row["finished_at"] is not None and delivered_at is not None and \
                delivered_at > aware(row["finished_at"]) + dt.timedelta(seconds=5)
            state = "done" if done else "error" if row["state"] == "error" or \
                copy.get("error") else "pending"
            out.append({**row, "destination": copy["destination"], "state": state,
                        "finished_at": delivered_at if done else None,
                        "started_at": None if later else row["started_at"]})
    return out


def _dataset_frame(store: HubStore, since: dt.datetime | None,
                   per_destination: bool = False) -> pd.DataFrame:
    import pandas as pd

    rows = [dict(row._mapping) for row in store.dataset_rows(since)]
    if per_destination:
        rows = _per_destination(rows)
    frame = pd.DataFrame(rows, columns=["agent_id", "user", "state", "destination",
                                        "total_files", "total_bytes", "created_at",
                                        "started_at", "finished_at"])
    for column in ("created_at", "started_at", "finished_at"):
        frame[column] = pd.to_datetime([aware(v) for v in frame[column]], utc=True)
    frame["destination"] = frame["destination"].fillna("(unknown)")
    frame["day"] = frame["created_at"].dt.strftime("%Y-%m-%d")
    delivered = frame["state"] == "done"
    copy_s = (frame["finished_at"] - frame["started_at"]).dt.total_seconds()
    frame["rate_mb_s"] = (frame["total_bytes"] / 1e6 / copy_s).where(delivered & (copy_s > 0))
    frame["ready_to_delivered_s"] = (frame["finished_at"] - frame["created_at"]) \
        .dt.total_seconds().where(delivered)
    frame["failed"] = frame["state"] == "error"
    return frame


def dataset_table(store: HubStore, by: str, since: dt.datetime | None = None) -> pd.DataFrame:
    """Dataset statistics grouped ``by`` "day" (x agent), "user" or "destination".

    Bytes and files count delivered datasets; failures count quarantined ones; medians
    are over delivered datasets. ``by="destination"`` counts each destination's copy
    (``[[destinations]]``): delivered there, or failed there (an error while it waits).
    """
    import pandas as pd

    if by not in _GROUPS:
        raise ValueError(f"unknown table {by!r}; choose one of {', '.join(TABLES)}")
    frame = _dataset_frame(store, since, per_destination=by == "destination")
    keys = _GROUPS[by]
    if frame.empty:
        return pd.DataFrame(columns=keys + _COLUMNS)
    delivered = frame.assign(total_bytes=frame["total_bytes"].where(frame["state"] == "done", 0),
                             total_files=frame["total_files"].where(frame["state"] == "done", 0))
    table = delivered.groupby(keys, dropna=False).agg(
        datasets=("state", "size"), bytes=("total_bytes", "sum"), files=("total_files", "sum"),
        failures=("failed", "sum"), median_rate_mb_s=("rate_mb_s", "median"),
        median_ready_to_delivered_s=("ready_to_delivered_s", "median")).reset_index()
    return table.sort_values(keys, ascending=[by != "day"] + [True] * (len(keys) - 1),
                             ignore_index=True)


_RUN_COLUMNS = ["day", "agent_id", "workflow", "runs", "finished", "failures", "open",
                "median_duration_s", "total_duration_s"]
_RUN_FAILED = ("error", "timeout")  # pipeline run statuses counted as failures
_RUN_OPEN = ("created", "started")


def run_table(store: HubStore, since: dt.datetime | None = None) -> pd.DataFrame:
    """Pipeline runs per day (created, UTC) x agent x workflow, newest day first.

    ``runs``: all; ``finished``, ``failures`` (error or timeout), ``open`` (created or
    started): by status; durations over the runs that have one (ended attempts).
    """
    import pandas as pd

    rows = [row._mapping for row in store.run_rows(since)]
    frame = pd.DataFrame(rows, columns=["agent_id", "workflow", "status", "created_at",
                                        "duration_s"])
    if frame.empty:
        return pd.DataFrame(columns=_RUN_COLUMNS)
    created = pd.to_datetime([aware(v) for v in frame["created_at"]], utc=True)
    frame["day"] = created.strftime("%Y-%m-%d")
    frame["finished"] = frame["status"] == "finished"
    frame["failed"] = frame["status"].isin(_RUN_FAILED)
    frame["open"] = frame["status"].isin(_RUN_OPEN)
    table = frame.groupby(["day", "agent_id", "workflow"]).agg(
        runs=("status", "size"), finished=("finished", "sum"), failures=("failed", "sum"),
        open=("open", "sum"), median_duration_s=("duration_s", "median"),
        total_duration_s=("duration_s", "sum")).reset_index()
    return table.sort_values(["day", "agent_id", "workflow"], ascending=[False, True, True],
                             ignore_index=True)[_RUN_COLUMNS]


def error_table(store: HubStore, since: dt.datetime | None = None) -> pd.DataFrame:
    """Warnings and errors per kind of event: count, how many agents, last seen."""
    import pandas as pd

    rows = [dict(r._mapping, last=aware(r.last)) for r in store.error_counts(since)]
    return pd.DataFrame(rows, columns=["kind", "level", "count", "agents", "last"])


def table(store: HubStore, name: str, since: dt.datetime | None = None) -> pd.DataFrame:
    """One of :data:`TABLES` as a DataFrame."""
    if name == "errors":
        return error_table(store, since)
    if name == "runs":
        return run_table(store, since)
    return dataset_table(store, name, since)


__all__ = ["TABLES", "dataset_table", "run_table", "error_table", "table"]
