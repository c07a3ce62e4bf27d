"""The execution log of pipeline runs: queries, statistics and dataset histories.

Everything comes from the journal and is returned as pandas DataFrames (or plain dicts),
the same for the CLI, the dashboard and a notebook.

Examples
--------
>>> from autotx_lib.journal import Journal
>>> journal = Journal("sqlite://")
>>> runs(journal).empty
True
>>> list(statistics(journal, by="workflow").columns)[:4]
['runs', 'created', 'started', 'finished']
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from autotx_lib.journal import Journal
from autotx_lib.journal.pipeline_runs import RUN_STATES, PipelineStore, aware

#: Columns of :func:`runs`.
RUN_COLUMNS = ["id", "workflow", "version", "status", "dataset_path", "user", "initiator",
               "attempts", "created_at", "started_at", "finished_at", "duration_s", "error",
               "dataset_id", "rerun_of", "next_attempt_at"]
GROUPINGS = ("day", "workflow", "initiator")


def _frame(rows: list[Any], columns: list[str]):
    import pandas as pd

    frame = pd.DataFrame([{c: getattr(r, c) for c in columns} for r in rows], columns=columns)
    for column in ("created_at", "started_at", "finished_at", "next_attempt_at"):
        if column in frame:
            frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


def runs(journal: Journal, *, workflow: str | None = None, status: str | None = None,
         since: dt.datetime | None = None, initiator: str | None = None, order: str = "-id",
         limit: int = 50, offset: int = 0):
    """One page of runs, newest first by default.

    Parameters
    ----------
    workflow, status, initiator : str, optional
        Exact filters (``status`` one of created, started, finished, error, cancelled,
        timeout).
    since : datetime, optional
        Runs created at or after (aware; naive is taken as UTC).
    order : str
        A column name, ``-`` in front for descending.
    limit, offset : int
        The page.

    Returns
    -------
    pandas.DataFrame
        :data:`RUN_COLUMNS`.
    """
    if status is not None and status not in RUN_STATES:
        raise ValueError(f"unknown status {status!r}; choose one of {', '.join(RUN_STATES)}")
    if order.lstrip("-") not in RUN_COLUMNS:
        raise ValueError(f"cannot sort by {order!r}; choose one of {', '.join(RUN_COLUMNS)}")
    rows = PipelineStore(journal).query(workflow=workflow, status=status, since=aware(since),
                                        initiator=initiator, order=order, limit=limit,
                                        offset=offset)
    return _frame(rows, RUN_COLUMNS)


def count(journal: Journal, **filters: Any) -> int:
    """How many runs match the filters of :func:`runs`."""
    if filters.get("since") is not None:
        filters["since"] = aware(filters["since"])
    return PipelineStore(journal).count(**filters)


def pipelines_status(source: Any, *, now: dt.datetime | None = None,
                     failed_within: dt.timedelta = dt.timedelta(days=1), limit: int = 5
                     ) -> dict[str, Any]:
    """The pipelines part of ``autotx status``: runs under way, runs failed lately.

    Parameters
    ----------
    source : Config or Journal
        A configuration's journal is opened read-only (as ``autotx status`` does).
    now : datetime, optional
        Aware UTC; default now.
    failed_within : timedelta
        How far back failures count (a day).
    limit : int
        Runs listed in each part (the counts cover all).

    Returns
    -------
    dict
        JSON-ready: ``started``, ``waiting`` (created), ``retrying`` (a retry planned),
        ``failed`` (error without retry, or timeout, within ``failed_within``), and
        ``under_way`` / ``failures``: lists of ``{id, workflow, dataset, status,
        created_at, error}``.

    Examples
    --------
    >>> pipelines_status(Journal("sqlite://"))["started"]
    0
    """
    journal = source if isinstance(source, Journal) else \
        Journal(source.journal_url, readonly=True)
    store = PipelineStore(journal)
    now = aware(now) or dt.datetime.now(dt.UTC)
    counts, open_rows = store.open_runs(limit)
    failed, failed_rows = store.failed_since(now - failed_within, limit)

    def brief(row: Any) -> dict[str, Any]:
        created = aware(row.created_at)
        return {"id": row.id, "workflow": row.workflow,
                "dataset": f"{row.user}/{Path(row.dataset_path).name}" if row.user
                else row.dataset_path, "status": row.status,
                "created_at": created.isoformat() if created else None, "error": row.error}

    return {"started": counts["started"], "waiting": counts["created"],
            "retrying": counts["retrying"], "failed": failed,
            "failed_within_hours": failed_within.total_seconds() / 3600,
            "under_way": [brief(r) for r in open_rows],
            "failures": [brief(r) for r in failed_rows]}


def pipelines_status_lines(summary: dict[str, Any], width: int = 160) -> list[str]:
    """:func:`pipelines_status` as a few lines of text (none when nothing is going on).

    Examples
    --------
    >>> pipelines_status_lines(pipelines_status(Journal("sqlite://")))
    []
    """
    if not (summary["started"] or summary["waiting"] or summary["retrying"]
            or summary["failed"]):
        return []
    hours = summary["failed_within_hours"]
    within = "day" if hours == 24 else f"{hours:g} h"
    lines = [f"pipelines: {summary['started']} running, {summary['waiting']} waiting, "
             f"{summary['retrying']} to retry; {summary['failed']} failed in the last "
             f"{within} (autotx pipelines log)"]
    for run in summary["under_way"]:
        state = "to retry" if run["status"] == "error" else run["status"]
        lines.append(f"  run {run['id']} {run['workflow']} on {run['dataset']}: {state}")
    for run in summary["failures"]:
        lines.append(f"  run {run['id']} {run['workflow']} on {run['dataset']} "
                     f"{run['status']}: {(run['error'] or '')[:width]}")
    return lines


def run_detail(journal: Journal, run_id: int) -> dict[str, Any]:
    """One run: its row (dict), ``steps`` (DataFrame) and ``results`` (dict).

    Raises
    ------
    KeyError
        No run with that id.
    """
    store = PipelineStore(journal)
    row = store.run(run_id)
    if row is None:
        raise KeyError(f"no pipeline run {run_id}; `autotx pipelines log` lists them")
    detail = dict(row._mapping)
    for key in ("created_at", "started_at", "finished_at", "next_attempt_at"):
        detail[key] = aware(detail[key])
    detail["params"] = json.loads(detail["params"] or "{}")
    detail["steps"] = _frame(store.steps(run_id), ["attempt", "seq", "name", "started_at",
                                                   "duration_s", "status", "message"])
    detail["results"] = store.results([run_id])[run_id]
    return detail


def statistics(journal: Journal, by: str = "day", *, since: dt.datetime | None = None):
    """Counts per status, error rate and duration percentiles, per day, workflow or initiator.

    Returns
    -------
    pandas.DataFrame
        Indexed by the grouping; columns ``runs``, one per status, ``error_rate``
        (error + timeout over ended runs), ``p50_s``, ``p90_s``, ``p99_s`` (durations of
        ended runs), ``mean_s``.
    """
    import pandas as pd

    if by not in GROUPINGS:
        raise ValueError(f"cannot group by {by!r}; choose one of {', '.join(GROUPINGS)}")
    rows = PipelineStore(journal).stats_rows(by, aware(since))
    frame = pd.DataFrame.from_records(rows, columns=["key", "status", "duration_s"])
    columns = ["runs", *RUN_STATES, "error_rate", "p50_s", "p90_s", "p99_s", "mean_s"]
    if frame.empty:
        return pd.DataFrame(columns=columns).rename_axis(by)
    key = frame["key"].astype(str).rename(by)
    frame["duration_s"] = frame["duration_s"].astype(float)
    counts = (frame.groupby([key, frame["status"]]).size().unstack(fill_value=0)
              .reindex(columns=list(RUN_STATES), fill_value=0))
    counts.insert(0, "runs", counts.sum(axis=1))
    ended = counts[["finished", "error", "timeout"]].sum(axis=1)
    counts["error_rate"] = ((counts["error"] + counts["timeout"]) / ended.where(ended > 0)
                            ).fillna(0.0)
    durations = frame["duration_s"].groupby(key)
    quantiles = durations.quantile([0.5, 0.9, 0.99]).unstack()
    for q, name in ((0.5, "p50_s"), (0.9, "p90_s"), (0.99, "p99_s")):
        counts[name] = quantiles[q] if q in quantiles else float("nan")
    counts["mean_s"] = durations.mean()
    counts.index.name = by
    counts.columns.name = None
    return counts[columns]


def error_statistics(journal: Journal, *, since: dt.datetime | None = None):
    """How often each error happened (its first line, by workflow), most frequent first."""
    import pandas as pd

    rows = PipelineStore(journal).errors(aware(since))
    frame = pd.DataFrame({"workflow": [r[0] for r in rows],
                          "error": [r[1].split("\n")[0][:200] for r in rows]})
    if frame.empty:
        return pd.DataFrame(columns=["workflow", "error", "runs"])
    return (frame.value_counts(["workflow", "error"]).rename("runs").reset_index()
            .sort_values("runs", ascending=False, kind="stable").reset_index(drop=True))


def _key_results(results: dict[str, Any], limit: int = 4) -> str:
    """The few result items a timeline shows (usable, verdict counts, counts)."""
    shown = []
    for key in ("usable", "verdicts", "previews", "images", "flagged_wells", "ids"):
        if key in results:
            value = results[key]
            if isinstance(value, list):
                value = f"{len(value)}"
            elif isinstance(value, dict):
                value = ", ".join(f"{k} {v}" for k, v in value.items())
            shown.append(f"{key}: {value}")
    return "; ".join(shown[:limit])


def find_dataset(journal: Journal, dataset: str | int) -> Any:
    """The journal's dataset row for an id, ``user/name`` or a delivered path (None if none)."""
    text = str(dataset)
    if text.isdigit():
        try:
            return journal.dataset(int(text))
        except Exception:  # noqa: BLE001 - not an id after all
            return None
    for row in journal.all_datasets():
        if text in (f"{row.user}/{row.name}", row.dest_path, row.incoming_path):
            return row
    return None


def history(journal: Journal, dataset: str | int):
    """One timeline of a dataset: created, transferred, delivered, events, pipeline runs.

    ``dataset`` is the journal's id, ``user/name`` or a folder (a folder the journal does
    not know shows its pipeline runs only).

    Returns
    -------
    pandas.DataFrame
        ``at, what, status, detail`` (``run_id`` for pipeline runs), oldest first.
    """
    import pandas as pd

    store = PipelineStore(journal)
    row = find_dataset(journal, dataset)
    entries: list[dict[str, Any]] = []
    if row is not None:
        entries.append({"at": row.created_at, "what": "created", "status": "",
                        "detail": row.incoming_path})
        if row.started_at:
            entries.append({"at": row.started_at, "what": "transfer started", "status": "",
                            "detail": f"{row.total_files} files, {row.total_bytes} bytes"})
        if row.finished_at:
            entries.append({"at": row.finished_at, "what": "transferred", "status": row.state,
                            "detail": row.dest_path or row.error or ""})
        for event in journal.recent_events(500, dataset_id=row.id):
            entries.append({"at": event.at, "what": event.kind, "status": event.level,
                            "detail": event.message})
        found = store.runs_of_dataset(dataset_id=row.id, path=row.dest_path)
    else:
        import os

        found = store.runs_of_dataset(path=os.path.normpath(os.path.abspath(str(dataset))))
    results = store.results([r.id for r in found])
    for run in found:
        detail = _key_results(results[run.id]) or (run.error or "")[:200]
        entries.append({"at": run.created_at, "what": f"{run.workflow} {run.version}",
                        "status": run.status, "detail": detail, "run_id": run.id})
    frame = pd.DataFrame(entries, columns=["at", "what", "status", "detail", "run_id"])
    frame["at"] = pd.to_datetime(frame["at"], utc=True)
    frame["run_id"] = frame["run_id"].astype("Int64")
    return frame.sort_values("at", kind="stable").reset_index(drop=True)


__all__ = ["runs", "count", "run_detail", "statistics", "error_statistics", "history",
           "find_dataset", "RUN_COLUMNS", "GROUPINGS", "pipelines_status",
           "pipelines_status_lines"]
