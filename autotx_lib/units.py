"""How sizes, durations and times are shown to people (CLI, mail, dashboards alike)."""

from __future__ import annotations

import datetime as dt


def human_bytes(count: float | None) -> str:
    """1536 -> '1.5 kB' (decimal units, as disks are sold); None -> '?'.

    Examples
    --------
    >>> human_bytes(1536), human_bytes(999), human_bytes(2.5e12)
    ('1.5 kB', '999 B', '2.5 TB')
    """
    if count is None:
        return "?"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(count) < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"


def human_duration(seconds: float | None) -> str:
    """75 -> '1 min 15 s'; under a minute with a decimal; None -> 'unknown'.

    Examples
    --------
    >>> human_duration(4.25), human_duration(75), human_duration(7322)
    ('4.2 s', '1 min 15 s', '2 h 02 min')
    """
    if seconds is None:
        return "unknown"
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def local_time(value: dt.datetime | None, *, short: bool = False) -> str:
    """A UTC datetime from the journal, in local time with its zone ('' for None); a naive
    value is taken to be UTC.

    ``short`` leaves out the year and the seconds, for tables at 80 columns.

    Examples
    --------
    On a computer whose local time is UTC:

    >>> local_time(dt.datetime(2026, 12, 1, 9, 30, 5)), local_time(None)  # doctest: +SKIP
    ('2026-12-01 09:30:05 UTC', '')
    >>> local_time(dt.datetime(2026, 12, 1, 9, 30, 5), short=True)  # doctest: +SKIP
    '12-01 09:30 UTC'
    """
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return f"{value.astimezone():{'%m-%d %H:%M %Z' if short else '%Y-%m-%d %H:%M:%S %Z'}}"


def iso_time(value: dt.datetime | None) -> str | None:
    """A time for JSON: ISO 8601 with its zone; a naive value is taken to be UTC.

    Examples
    --------
    >>> iso_time(dt.datetime(2026, 12, 1, 9, 30))
    '2026-12-01T09:30:00+00:00'
    """
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).isoformat()
