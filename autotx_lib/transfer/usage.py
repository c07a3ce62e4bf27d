"""Usage report: hours per user, project or instrument, with the data produced.

Sessions are cut at the period's boundaries (a session from 30 November 22:00 to 1
December 02:00 counts 2 h in each month), and overlapping sessions of the same key on
the same instrument are counted once (their union), so hours are never double counted.
Data volume: the datasets delivered for the user that were claimed during a session.

Examples
--------
>>> frame = usage(config, month="2026-11", by="user")          # doctest: +SKIP
>>> frame[["user", "hours", "sessions", "bytes"]]               # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import TYPE_CHECKING

from autotx_lib import journal as J
from autotx_lib.config import Config
from autotx_lib.journal import Journal, as_utc, utcnow
from autotx_lib.journal.instrument_sessions import SessionStore

if TYPE_CHECKING:
    import pandas as pd

BY = ("user", "project", "instrument")


def month_bounds(month: str) -> tuple[dt.datetime, dt.datetime]:
    """``"2026-11"`` -> (2026-11-01 00:00, 2026-12-01 00:00), aware UTC.

    Raises
    ------
    ValueError
        Not a month written as YYYY-MM.
    """
    try:
        start = dt.datetime.strptime(month, "%Y-%m").replace(tzinfo=dt.UTC)
    except ValueError:
        raise ValueError(f"{month!r} is not a month; write it as YYYY-MM, e.g. 2026-11") from None
    end = (start + dt.timedelta(days=32)).replace(day=1)
    return start, end


def _union_seconds(intervals: list[tuple[dt.datetime, dt.datetime]]) -> float:
    """Total length of the union of intervals."""
    total = 0.0
    current_start = current_end = None
    for start, end in sorted(intervals):
        if current_end is None or start > current_end:
            if current_end is not None:
                total += (current_end - current_start).total_seconds()
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_end is not None:
        total += (current_end - current_start).total_seconds()
    return total


def usage(source: Config | Journal, *, start: dt.datetime | None = None,
          end: dt.datetime | None = None, month: str | None = None, by: str = "user",
          now: dt.datetime | None = None) -> pd.DataFrame:
    """Hours, sessions and data per user, project or instrument over a period.

    Parameters
    ----------
    source : Config or Journal
    start, end : datetime, optional
        The period [start, end), UTC (a naive value is taken as UTC); or give ``month``
        (``"2026-11"``).
    by : {"user", "project", "instrument"}
    now : datetime, optional
        Where an open session ends for the report (default: now).

    Returns
    -------
    frame : pandas.DataFrame
        Columns: the key, ``hours``, ``sessions``, ``datasets``, ``bytes``; one row per
        key, most hours first.
    """
    import pandas as pd

    if by not in BY:
        raise ValueError(f"by={by!r}: use one of {', '.join(BY)}")
    if month is not None:
        start, end = month_bounds(month)
    if start is None or end is None or end <= start:
        raise ValueError("give month='YYYY-MM', or start and end with start < end")
    start, end = as_utc(start), as_utc(end)
    journal = source if isinstance(source, Journal) else Journal(source.journal_url)
    now = as_utc(now) or utcnow()
    intervals: dict[tuple[str, str], list] = defaultdict(list)
    counts: dict[str, int] = defaultdict(int)
    windows: dict[str, list] = defaultdict(list)  # user -> their session windows
    for row in SessionStore(journal).between(start, end):
        key = getattr(row, by) or "(none)"
        stop = min(max(row.ended_at or now, row.started_at), end)
        begin = max(row.started_at, start)
        if stop <= begin:
            continue
        intervals[(key, row.instrument)].append((begin, stop))
        counts[key] += 1
        windows[row.user].append((row.started_at, row.ended_at or now, key))
    data: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for dataset in journal.datasets_in([J.DONE]):
        for begin, stop, key in windows.get(dataset.user, []):
            if begin <= dataset.created_at <= stop and start <= dataset.created_at < end:
                data[key][0] += 1
                data[key][1] += dataset.total_bytes
                break
    hours: dict[str, float] = defaultdict(float)
    for (key, _instrument), spans in intervals.items():
        hours[key] += _union_seconds(spans) / 3600.0
    frame = pd.DataFrame([{by: key, "hours": round(hours[key], 4), "sessions": counts[key],
                           "datasets": data[key][0], "bytes": data[key][1]}
                          for key in hours], columns=[by, "hours", "sessions", "datasets", "bytes"])
    return frame.sort_values(["hours", by], ascending=[False, True]).reset_index(drop=True)


def usage_chart(frame: pd.DataFrame):
    """A bokeh bar chart of the hours per key of a :func:`usage` frame."""
    from bokeh.plotting import figure

    key = frame.columns[0]
    names = [str(v) for v in frame[key]]
    chart = figure(x_range=names, height=260, title=f"hours per {key}", toolbar_location=None,
                   sizing_mode="stretch_width")
    chart.vbar(x=names, top=list(frame["hours"]), width=0.8)
    chart.yaxis.axis_label = "hours"
    return chart


__all__ = ["month_bounds", "usage", "usage_chart"]
