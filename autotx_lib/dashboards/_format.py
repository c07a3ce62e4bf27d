"""Small display helpers shared by the dashboards: HTML tables and badges.

Sizes, durations and times come from :mod:`autotx_lib.units`, as in the CLI and the mail.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import Any

from autotx_lib.units import human_bytes, human_duration, local_time

__all__ = ["Markup", "badge", "html_table", "human_bytes", "human_duration", "local_time"]


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
