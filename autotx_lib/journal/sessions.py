"""Agent sessions: one row per agent start, with its heartbeat and what it is doing."""

from __future__ import annotations

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Row

from autotx_lib.journal._base import Records
from autotx_lib.journal.schema import sessions, utcnow


class SessionRecords(Records):
    """Queries and updates of ``sessions``."""

    def start_session(self, host: str, pid: int, version: str) -> tuple[int, Row | None]:
        """Open an agent session; returns its id and the previous session if it ended uncleanly."""
        now = utcnow()
        with self.engine.begin() as conn:
            previous = conn.execute(select(sessions).order_by(sessions.c.id.desc()).limit(1)).first()
            new_id = conn.execute(insert(sessions).values(
                host=host, pid=pid, version=version, started_at=now, heartbeat_at=now,
                clean=False, state="starting")).inserted_primary_key[0]
        unclean = previous if previous is not None and previous.ended_at is None else None
        return new_id, unclean

    def heartbeat(self, session_id: int, state: str, reason: str | None = None) -> None:
        """Record that the agent is alive, and what it is doing."""
        with self.engine.begin() as conn:
            conn.execute(update(sessions).where(sessions.c.id == session_id).values(
                heartbeat_at=utcnow(), state=state, state_reason=reason))

    def end_session(self, session_id: int) -> None:
        """Mark a session as cleanly ended."""
        with self.engine.begin() as conn:
            conn.execute(update(sessions).where(sessions.c.id == session_id).values(
                ended_at=utcnow(), clean=True, state="stopped"))

    def last_session(self) -> Row | None:
        """The newest agent session, if any."""
        with self.engine.connect() as conn:
            return conn.execute(select(sessions).order_by(sessions.c.id.desc()).limit(1)).first()
