"""The free space last measured at each destination, kept in the journal with its time.

The agent measures every destination's free space at its hourly housekeeping and whenever
it checks a free-space floor before a copy (an ``smb://`` share through the agent's open
connection) and records it here (journal setting ``destination_free_space``). The hub
heartbeat reports these values for the shares, so it never logs on to a share itself.

Examples
--------
>>> record_free_space(journal, "nas", 12_000_000_000)        # doctest: +SKIP
>>> last_free_space(journal)["nas"].free_bytes                 # doctest: +SKIP
12000000000
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from autotx_lib.journal import Journal

FREE_SPACE_KEY = "destination_free_space"  # {name: {"free_bytes": n, "at": ISO UTC time}}


@dataclass(frozen=True)
class Measured:
    """A destination's free space as last measured, and when (aware UTC)."""

    free_bytes: int
    at: dt.datetime


def record_free_space(journal: Journal, name: str, free_bytes: int,
                      now: dt.datetime | None = None) -> None:
    """Record that destination ``name`` had ``free_bytes`` free (now, or at ``now``)."""
    measured = journal.get_setting(FREE_SPACE_KEY) or {}
    at = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    measured[name] = {"free_bytes": int(free_bytes), "at": at.isoformat()}
    journal.set_setting(FREE_SPACE_KEY, measured)


def last_free_space(journal: Journal, max_age: dt.timedelta | None = None,
                    now: dt.datetime | None = None) -> dict[str, Measured]:
    """The last measurement of each destination (by name); with ``max_age``, only those
    measured at most that long before now (older ones are left out: unknown)."""
    now = now or dt.datetime.now(dt.UTC)
    found = {}
    for name, value in (journal.get_setting(FREE_SPACE_KEY) or {}).items():
        measured = Measured(int(value["free_bytes"]), dt.datetime.fromisoformat(value["at"]))
        if max_age is None or now - measured.at <= max_age:
            found[name] = measured
    return found


__all__ = ["FREE_SPACE_KEY", "Measured", "last_free_space", "record_free_space"]
