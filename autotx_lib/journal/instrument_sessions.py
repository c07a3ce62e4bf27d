"""Instrument sessions and the files live-synced during them (see schema.py).

One open session per instrument is enforced by the database itself (a unique index on
the instrument over open sessions), so two terminals starting a session at once cannot
both succeed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError

from autotx_lib.journal.schema import instrument_sessions, live_files, utcnow

if TYPE_CHECKING:
    from autotx_lib.journal.core import Journal


class SessionOpenError(Exception):
    """Another session was opened on this instrument at the same moment."""


class SessionStore:
    """Queries over the session tables of one journal (its migrations create them)."""

    def __init__(self, journal: Journal):
        self.journal = journal
        self.engine = journal.engine

    def open_session(self, instrument: str) -> Row | None:
        """The open session of ``instrument``, if any."""
        query = (select(instrument_sessions).where(instrument_sessions.c.instrument == instrument)
                 .where(instrument_sessions.c.ended_at.is_(None)))
        with self.engine.connect() as conn:
            return conn.execute(query).first()

    def session(self, session_id: int) -> Row | None:
        """One session by id."""
        with self.engine.connect() as conn:
            return conn.execute(select(instrument_sessions).where(
                instrument_sessions.c.id == session_id)).first()

    def add(self, **values: Any) -> int:
        """Open a session; raises SessionOpenError when one is open on the instrument."""
        now = utcnow()
        values.setdefault("started_at", now)
        values.setdefault("last_activity_at", now)
        try:
            with self.engine.begin() as conn:
                return conn.execute(insert(instrument_sessions).values(**values)
                                    ).inserted_primary_key[0]
        except IntegrityError:
            raise SessionOpenError(values["instrument"]) from None

    def end(self, session_id: int, reason: str, when: dt.datetime | None = None,
            note: str | None = None) -> bool:
        """Close a session (False when it was closed already: a second end is a no-op)."""
        values: dict[str, Any] = {"ended_at": when or utcnow(), "end_reason": reason}
        if note:
            values["note"] = note
        with self.engine.begin() as conn:
            result = conn.execute(update(instrument_sessions)
                                  .where(instrument_sessions.c.id == session_id)
                                  .where(instrument_sessions.c.ended_at.is_(None)).values(**values))
        return result.rowcount == 1

    def touch(self, session_id: int, when: dt.datetime) -> None:
        """Record activity (a new or changed file) in a session."""
        with self.engine.begin() as conn:
            conn.execute(update(instrument_sessions).where(instrument_sessions.c.id == session_id)
                         .where(instrument_sessions.c.last_activity_at < when)
                         .values(last_activity_at=when))

    def between(self, start: dt.datetime, end: dt.datetime) -> list[Row]:
        """Sessions overlapping [start, end) (open ones included), oldest first."""
        query = (select(instrument_sessions).where(instrument_sessions.c.started_at < end)
                 .where((instrument_sessions.c.ended_at.is_(None))
                        | (instrument_sessions.c.ended_at > start))
                 .order_by(instrument_sessions.c.started_at))
        with self.engine.connect() as conn:
            return list(conn.execute(query))

    def ended_since(self, instrument: str, since: dt.datetime) -> list[Row]:
        """Sessions of ``instrument`` that ended after ``since``, oldest first."""
        query = (select(instrument_sessions).where(instrument_sessions.c.instrument == instrument)
                 .where(instrument_sessions.c.ended_at > since)
                 .order_by(instrument_sessions.c.ended_at))
        with self.engine.connect() as conn:
            return list(conn.execute(query))

    def recent(self, limit: int = 20) -> list[Row]:
        """Newest sessions first."""
        with self.engine.connect() as conn:
            return list(conn.execute(select(instrument_sessions)
                                     .order_by(instrument_sessions.c.id.desc()).limit(limit)))

    # --- reporting to the hub (autotx_lib.hub.reporter) -----------------------------------

    def sessions_after(self, session_id: int, limit: int,
                       settled_before: dt.datetime | None = None) -> list[Row]:
        """Sessions with an id above ``session_id``, oldest first (an outbox cursor reads
        them); ``settled_before``: only sessions started before then (server databases hand
        out ids before commit)."""
        query = select(instrument_sessions).where(instrument_sessions.c.id > session_id)
        if settled_before is not None:
            query = query.where(instrument_sessions.c.started_at <= settled_before)
        with self.engine.connect() as conn:
            return list(conn.execute(query.order_by(instrument_sessions.c.id).limit(limit)))

    def unended_sessions(self, also: Sequence[int] = ()) -> list[Row]:
        """Open sessions (they may still change) and the sessions ``also`` names, by id."""
        condition = instrument_sessions.c.ended_at.is_(None)
        if also:
            condition = condition | instrument_sessions.c.id.in_(list(also))
        with self.engine.connect() as conn:
            return list(conn.execute(select(instrument_sessions).where(condition)
                                     .order_by(instrument_sessions.c.id)))

    # --- live-synced files ----------------------------------------------------------------

    def live_files(self, session_id: int) -> dict[str, Row]:
        """The files synced in a session, by relpath."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(live_files).where(live_files.c.session_id == session_id))
            return {r.relpath: r for r in rows}

    def live_files_of_user(self, user: str) -> dict[str, Row]:
        """The newest synced copy of each relpath over the user's sessions."""
        query = (select(live_files).join(instrument_sessions,
                                         live_files.c.session_id == instrument_sessions.c.id)
                 .where(instrument_sessions.c.user == user).order_by(live_files.c.id))
        with self.engine.connect() as conn:
            return {r.relpath: r for r in conn.execute(query)}

    def record_synced(self, session_id: int, relpath: str, size: int, mtime_ns: int,
                      ctime_ns: int, digest: str, staged_path: str, copied: bool) -> int:
        """Insert or update the row of a synced file (``copied``: bytes were written);
        returns its id."""
        now = utcnow()
        values = {"size": size, "mtime_ns": mtime_ns, "ctime_ns": ctime_ns, "digest": digest,
                  "staged_path": staged_path, "synced_at": now}
        with self.engine.begin() as conn:
            known = conn.execute(select(live_files.c.id).where(
                live_files.c.session_id == session_id).where(live_files.c.relpath == relpath)
            ).first()
            if known is None:
                return conn.execute(insert(live_files).values(
                    session_id=session_id, relpath=relpath, copies=1, **values)
                ).inserted_primary_key[0]
            conn.execute(update(live_files).where(live_files.c.id == known[0]).values(
                copies=live_files.c.copies + int(copied), **values))
            return known[0]

    def forget(self, row_ids: Sequence[int]) -> None:
        """Drop live-file rows whose staged copy was used (moved into a dataset) or lost."""
        if not row_ids:
            return
        with self.engine.begin() as conn:
            conn.execute(live_files.delete().where(live_files.c.id.in_(list(row_ids))))


__all__ = ["SessionOpenError", "SessionStore", "instrument_sessions", "live_files"]
