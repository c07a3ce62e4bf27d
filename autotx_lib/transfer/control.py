"""Suspend and resume the agent by hand; the suspension lives in the journal, so it holds
across restarts and works from any process (CLI, notebook, dashboard).

Examples
--------
>>> suspend(config, reason="laser alignment until 14:00")   # doctest: +SKIP
>>> suspension(config)                                       # doctest: +SKIP
Suspension(reason='laser alignment until 14:00', since=datetime(...), by='...')
>>> resume(config)                                           # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import getpass
import socket
from dataclasses import dataclass

from autotx_lib.config import Config
from autotx_lib.journal import Journal, as_utc, utcnow

SUSPENSION_KEY = "suspension"
BANDWIDTH_KEY = "bandwidth_mb_s"


@dataclass(frozen=True)
class Suspension:
    """A manual suspension: why, since when (UTC), and who asked."""

    reason: str
    since: dt.datetime
    by: str


def _journal(source: Config | Journal) -> Journal:
    return source if isinstance(source, Journal) else Journal(source.journal_url)


def suspend(source: Config | Journal, reason: str) -> Suspension:
    """Suspend transfers until :func:`resume`; a copy under way pauses within a second.

    Parameters
    ----------
    source : Config or Journal
    reason : str
        Shown by ``autotx status`` and the transfer monitor.
    """
    if not reason.strip():
        raise ValueError("give a reason, e.g. 'calibration until 14:00'; it is shown to others")
    record = Suspension(reason.strip(), utcnow(), f"{getpass.getuser()}@{socket.gethostname()}")
    journal = _journal(source)
    journal.set_setting(SUSPENSION_KEY, {"reason": record.reason,
                                         "since": record.since.isoformat(), "by": record.by})
    journal.log("warning", "suspended", f"transfers suspended by {record.by}: {record.reason}")
    return record


def resume(source: Config | Journal) -> Suspension | None:
    """Lift a manual suspension; returns the suspension that was lifted (None if none)."""
    journal = _journal(source)
    previous = suspension(journal)
    if previous is not None:
        journal.set_setting(SUSPENSION_KEY, None)
        journal.log("info", "resumed", f"transfers resumed (suspended since "
                    f"{previous.since:%Y-%m-%d %H:%M} UTC: {previous.reason})")
    return previous


def suspension(source: Config | Journal) -> Suspension | None:
    """The current manual suspension, or None."""
    value = _journal(source).get_setting(SUSPENSION_KEY)
    if not value:
        return None
    since = as_utc(dt.datetime.fromisoformat(value["since"]))  # older releases wrote no zone
    return Suspension(value["reason"], since, value["by"])


def set_bandwidth(source: Config | Journal, mb_s: float | None) -> None:
    """Cap the copy rate at ``mb_s`` MB/s (None: back to the config's value); a running
    agent applies it within about a second."""
    if mb_s is not None and mb_s <= 0:
        raise ValueError("the bandwidth cap must be a positive number of MB/s (or None)")
    journal = _journal(source)
    journal.set_setting(BANDWIDTH_KEY, mb_s)
    journal.log("info", "bandwidth", f"bandwidth cap set to {mb_s} MB/s" if mb_s else
                "bandwidth cap back to the configured value")


def bandwidth_override(source: Config | Journal) -> float | None:
    """The bandwidth cap set with :func:`set_bandwidth`, or None."""
    return _journal(source).get_setting(BANDWIDTH_KEY)
