"""Small display helpers shared by the dashboards: sizes, durations, HTML tables."""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Iterable, Sequence
from typing import Any


def human_bytes(count: float | None) -> str:
    """1536 -> '1.5 kB' (decimal units, as disks are sold); None -> '?'."""
    if count is None:
        return "?"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(count) < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"


def human_duration(seconds: float | None) -> str:
    """75 -> '1 min 15 s'; None -> 'unknown'."""
    if seconds is None:
        return "unknown"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def local_time(value: dt.datetime | None) -> str:
    """A UTC datetime from the journal, shown in local time ('' for None)."""
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def html_table(columns: Sequence[str], rows: Iterable[Sequence[Any]], *, empty: str = "none",
               css_class: str = "autotx-table") -> str:
    """An escaped HTML table; cells that are ``Markup`` are inserted as they are."""
    rows = list(rows)
    if not rows:
        return f'<div class="{css_class}-empty"><i>{html.escape(empty)}</i></div>'
    head = "".join(f"<th style='text-align:left;padding:2px 8px'>{html.escape(c)}</th>"
                   for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td style='padding:2px 8px'>{_cell(v)}</td>" for v in row) + "</tr>"
        for row in rows
    )
    return (f'<table class="{css_class}" style="border-collapse:collapse">'
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


class Markup(str):
    """Text that is already HTML (not escaped by :func:`html_table`)."""


def _cell(value: Any) -> str:
    if isinstance(value, Markup):
        return str(value)
    if isinstance(value, float):
        return html.escape(f"{value:.4g}")
    return html.escape("" if value is None else str(value))


def badge(text: str, colour: str) -> Markup:
    """A coloured label."""
    return Markup(f'<span style="background:{colour};color:white;border-radius:4px;'
                  f'padding:1px 6px">{html.escape(text)}</span>')
