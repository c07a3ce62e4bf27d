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
from autotx_lib.errors import AlreadySuspendedError
from autotx_lib.journal import Journal, as_utc, utcnow
from autotx_lib.transfer.bandwidth import check as check_bandwidth
from autotx_lib.transfer.bandwidth import resolve as resolve_bandwidth

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


def suspend(source: Config | Journal, reason: str, *, replace: bool = False) -> Suspension:
    """Suspend transfers until :func:`resume`; a copy under way pauses within a second.

    Parameters
    ----------
    source : Config or Journal
    reason : str
        Shown by ``autotx status`` and the transfer monitor.
    replace : bool
        Replace the reason of a suspension already in force (else that is an error).

    Raises
    ------
    AlreadySuspendedError
        Transfers are already suspended (by whom, since when, why) and ``replace`` is False.
    """
    if not reason.strip():
        raise ValueError("give a reason, e.g. 'calibration until 14:00'; it is shown to others")
    record = Suspension(reason.strip(), utcnow(), f"{getpass.getuser()}@{socket.gethostname()}")
    journal = _journal(source)
    current = suspension(journal)
    if current is not None and not replace:
        raise AlreadySuspendedError(current.reason, current.by, current.since)
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


def set_bandwidth(source: Config | Journal, value: float | str | None) -> None:
    """Change the bandwidth cap of a running agent (applied within about a second).

    Parameters
    ----------
    source : Config or Journal
    value : float, str or None
        MB/s; a rate text (``"20M"``, ``"512k"``), ``"off"`` (no cap, whatever the config
        says), a timetable (``"Mon-Fri 08:00,10M 19:00,off"``); None: back to the config.

    Raises
    ------
    ValueError
        ``value`` is not a rate, ``off`` or a timetable; the message shows the syntax.
    """
    if isinstance(value, int | float) and value <= 0:
        raise ValueError("the bandwidth cap must be a positive number of MB/s, 'off', a "
                         "timetable, or None for the configured value")
    if isinstance(value, str):
        value = check_bandwidth(value)
    journal = _journal(source)
    journal.set_setting(BANDWIDTH_KEY, value)
    journal.log("info", "bandwidth", "bandwidth cap back to the configured value"
                if value is None else f"bandwidth cap set to {describe_bandwidth(value)}")


def bandwidth_override(source: Config | Journal) -> float | str | None:
    """The bandwidth value set with :func:`set_bandwidth` (None: the config's applies)."""
    return _journal(source).get_setting(BANDWIDTH_KEY)


def describe_bandwidth(value: float | str | None) -> str:
    """A bandwidth value for people, with the rate in force now for a timetable."""
    if value is None or value == "off":
        return "no cap"
    now = resolve_bandwidth(value)
    if isinstance(value, str) and "," in value:
        return f"timetable {value!r} (now {f'{now:g} MB/s' if now else 'no cap'})"
    return f"{now:g} MB/s"


def effective_bandwidth(config: Config, journal: Journal | None = None) -> float | None:
    """The cap in MB/s the agent applies now (override from the journal, else the config)."""
    override = bandwidth_override(journal or config)
    return resolve_bandwidth(override if override is not None else config.gate.bandwidth_mb_s)
