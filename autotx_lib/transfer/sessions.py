"""Instrument sessions: who used the microscope, and when.

A session has an instrument (the agent's ``host_alias``), a user, optionally a project
and a booking reference, a start, an end and how it ended (``user``, ``logout``,
``timeout``, ``replaced``). Start and end it from the command line (``autotx session
start|end``), the :class:`~autotx_lib.dashboards.SessionLogger` widget, from Python, or
automatically from the console user's login (``[sessions] follow_login``). One session is
open per instrument at a time; a session without activity for ``idle_timeout_minutes``
is closed by the agent ("timeout"). Sessions live in the journal, so an agent restart
resumes the open one.

Examples
--------
>>> s = start_session(config, "alice", project="P-17")     # doctest: +SKIP
>>> current_session(config).user                            # doctest: +SKIP
'alice'
>>> end_session(config)                                     # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from autotx_lib.config import Config
from autotx_lib.errors import SessionError
from autotx_lib.journal import Journal, as_utc, utcnow
from autotx_lib.journal.instrument_sessions import SessionOpenError, SessionStore
from autotx_lib.transfer.layout import check_name

log = logging.getLogger("autotx.sessions")


@dataclass(frozen=True)
class InstrumentSession:
    """One session as plain data (times naive UTC, as the journal's)."""

    id: int
    instrument: str
    user: str
    project: str | None
    booking: str | None
    note: str | None
    started_by: str
    started_at: dt.datetime
    last_activity_at: dt.datetime
    ended_at: dt.datetime | None
    end_reason: str | None

    @classmethod
    def from_row(cls, row: Any) -> InstrumentSession:
        return cls(**{name: getattr(row, name) for name in cls.__dataclass_fields__})

    @property
    def open(self) -> bool:
        """True while the session runs."""
        return self.ended_at is None

    def duration(self, now: dt.datetime | None = None) -> dt.timedelta:
        """How long it ran (so far); never negative, even after a clock change."""
        end = self.ended_at or as_utc(now) or utcnow()
        return max(end - self.started_at, dt.timedelta(0))


def _store(source: Config | Journal) -> tuple[SessionStore, Journal]:
    journal = source if isinstance(source, Journal) else Journal(source.journal_url)
    return SessionStore(journal), journal


def _check_user(config: Config, user: str) -> str:
    user = (user or "").strip()
    if not user:
        raise SessionError("give the user whose session it is (--user NAME)")
    try:
        check_name(user)
    except Exception as error:  # UnsafePathError: say it as a session problem
        raise SessionError(f"{user!r} cannot be a user name: {error}") from None
    if config.destination is not None and not (config.destination / user).is_dir() and \
            not config.create_user_dirs and config.destination.is_dir():
        raise SessionError(f"unknown user {user!r}: there is no folder {user!r} at the "
                           f"destination {config.destination}; create it, or check the name")
    return user


def start_session(config: Config, user: str, *, project: str | None = None,
                  booking: str | None = None, note: str | None = None,
                  started_by: str = "python") -> InstrumentSession:
    """Open a session of ``user`` on this instrument.

    With ``[sessions] on_conflict = "end"`` (default) an open session is ended first
    ("replaced"); with ``"refuse"`` starting is refused while one is open.

    Raises
    ------
    SessionError
        No or an unknown user, or a session is open and ``on_conflict = "refuse"`` (or
        another one was started at the same moment).
    """
    user = _check_user(config, user)
    store, journal = _store(config)
    instrument = config.host_alias
    for _ in range(2):  # a start racing ours: end it (or refuse) once more
        current = store.open_session(instrument)
        if current is not None:
            if config.sessions.on_conflict == "refuse":
                raise SessionError(f"{current.user}'s session (since {current.started_at:%H:%M} "
                                   "UTC) is still open on this instrument; end it first "
                                   "(`autotx session end`)")
            store.end(current.id, "replaced")
            journal.log("info", "session-ended", f"session {current.id} of {current.user} "
                        f"ended: replaced by {user}'s")
        try:
            session_id = store.add(instrument=instrument, user=user, project=project,
                                   booking=booking, note=note, started_by=started_by)
            break
        except SessionOpenError:
            if config.sessions.on_conflict == "refuse":
                raise SessionError("another session was started on this instrument at the "
                                   "same moment; check `autotx session status`") from None
    else:
        raise SessionError("sessions keep being started at the same moment; try again")
    journal.log("info", "session-started", f"session {session_id}: {user}"
                + (f" (project {project})" if project else "") + f" by {started_by}")
    return InstrumentSession.from_row(store.session(session_id))


def end_session(config: Config, *, reason: str = "user", note: str | None = None,
                when: dt.datetime | None = None) -> InstrumentSession:
    """End the open session of this instrument.

    Raises
    ------
    SessionError
        No session is open.
    """
    store, journal = _store(config)
    current = store.open_session(config.host_alias)
    if current is None:
        raise SessionError("no session is open on this instrument (`autotx session start "
                           "--user NAME` opens one)")
    store.end(current.id, reason, when, note)
    journal.log("info", "session-ended", f"session {current.id} of {current.user} ended "
                f"({reason})")
    return InstrumentSession.from_row(store.session(current.id))


def current_session(source: Config | Journal, instrument: str | None = None
                    ) -> InstrumentSession | None:
    """The open session of the instrument (the config's ``host_alias``), if any."""
    store, _ = _store(source)
    if instrument is None:
        if not isinstance(source, Config):
            raise TypeError("give the instrument when passing a journal")
        instrument = source.host_alias
    row = store.open_session(instrument)
    return InstrumentSession.from_row(row) if row is not None else None


def close_if_idle(config: Config, journal: Journal, now: dt.datetime | None = None
                  ) -> InstrumentSession | None:
    """End the open session when it had no activity for ``idle_timeout_minutes``."""
    store = SessionStore(journal)
    current = store.open_session(config.host_alias)
    if current is None:
        return None
    now = as_utc(now) or utcnow()
    limit = dt.timedelta(minutes=config.sessions.idle_timeout_minutes)
    if now - current.last_activity_at < limit:
        return None
    store.end(current.id, "timeout", current.last_activity_at + limit)
    journal.log("warning", "session-ended", f"session {current.id} of {current.user} closed "
                f"after {config.sessions.idle_timeout_minutes:g} min without activity")
    return InstrumentSession.from_row(store.session(current.id))


def _console_user(users: list[Any]) -> str | None:
    """The user logged in at the console (a local terminal, not ssh), if any."""
    local = [u for u in users if not u.host or u.host in {"localhost", ":0", ":0.0"}]
    return local[0].name if local else None


class LoginFollower:
    """Starts and ends sessions with the console login (``[sessions] follow_login``).

    A change counts once it held for ``login_debounce_seconds`` (flapping logins are
    ignored). ``users`` and ``clock`` are injectable for tests (psutil.users, time).
    """

    def __init__(self, config: Config, users: Callable[[], list[Any]] | None = None,
                 clock: Callable[[], float] | None = None):
        import time

        import psutil

        self.config = config
        self.users = users or psutil.users
        self.clock = clock or time.monotonic
        self._seen: tuple[str | None, float] | None = None

    def poll(self) -> str | None:
        """Look once; returns "started", "ended" or None."""
        who = _console_user(self.users())
        now = self.clock()
        if self._seen is None or self._seen[0] != who:
            self._seen = (who, now)
        if now - self._seen[1] < self.config.sessions.login_debounce_seconds:
            return None
        current = current_session(self.config)
        if current is not None and current.user != who and current.started_by == "login":
            end_session(self.config, reason="logout")
            current = None
            if who is None:
                return "ended"
        if who is not None and current is None:
            try:
                start_session(self.config, who, started_by="login")
            except SessionError as error:
                log.warning("no session for the console user %s: %s", who, error)
                return None
            return "started"
        return None


__all__ = ["InstrumentSession", "LoginFollower", "close_if_idle", "current_session",
           "end_session", "start_session"]
