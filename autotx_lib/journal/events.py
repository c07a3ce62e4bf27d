"""Events: what happened, for people (``autotx status``, the transfer monitor, mails)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, insert, select
from sqlalchemy.engine import Row

from autotx_lib.journal._base import Records
from autotx_lib.journal.schema import events, utcnow


class EventRecords(Records):
    """Appending and reading ``events``."""

    def log(self, level: str, kind: str, message: str, dataset_id: int | None = None) -> None:
        """Append an event (``level`` is info, warning or error)."""
        with self.engine.begin() as conn:
            conn.execute(insert(events).values(at=utcnow(), dataset_id=dataset_id, level=level,
                                               kind=kind, message=message))

    def recent_events(self, limit: int = 50, dataset_id: int | None = None) -> list[Row]:
        """Newest events first."""
        query = select(events).order_by(events.c.id.desc()).limit(limit)
        if dataset_id is not None:
            query = query.where(events.c.dataset_id == dataset_id)
        with self.engine.connect() as conn:
            return list(conn.execute(query))

    def has_event(self, kind: str, message: str) -> bool:
        """Whether an event of this kind and message was ever recorded (report things once)."""
        query = (select(func.count()).select_from(events)
                 .where(events.c.kind == kind).where(events.c.message == message))
        with self.engine.connect() as conn:
            return bool(conn.execute(query).scalar())

    def events_after(self, event_id: int, limit: int,
                     settled_before: dt.datetime | None = None) -> list[Row]:
        """Events with an id above ``event_id``, oldest first (an outbox cursor reads them).

        ``settled_before``: only events recorded before then (on a server database ids are
        handed out before commit, so a just-written event may still appear below others).
        """
        query = select(events).where(events.c.id > event_id).order_by(events.c.id)
        if settled_before is not None:
            query = query.where(events.c.at <= settled_before)
        with self.engine.connect() as conn:
            return list(conn.execute(query.limit(limit)))
