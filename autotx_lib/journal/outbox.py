"""The mail outbox: a mail is never lost, it stays here until the SMTP server took it."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Row

from autotx_lib.journal._base import Records
from autotx_lib.journal.schema import outbox, utcnow


class OutboxRecords(Records):
    """Queries and updates of ``outbox``."""

    def queue_mail(self, kind: str, recipient: str, subject: str, body: str) -> int:
        """Put a message in the outbox; returns its id."""
        with self.engine.begin() as conn:
            return conn.execute(insert(outbox).values(
                created_at=utcnow(), kind=kind, recipient=recipient, subject=subject,
                body=body, attempts=0)).inserted_primary_key[0]

    def pending_mail(self, limit: int = 50) -> list[Row]:
        """Unsent messages whose next attempt is due, oldest first."""
        now = utcnow()
        query = (select(outbox).where(outbox.c.sent_at.is_(None))
                 .where((outbox.c.next_attempt_at.is_(None)) | (outbox.c.next_attempt_at <= now))
                 .order_by(outbox.c.id).limit(limit))
        with self.engine.connect() as conn:
            return list(conn.execute(query))

    def mail_sent(self, mail_id: int) -> None:
        """Mark a message as handed to the SMTP server."""
        with self.engine.begin() as conn:
            conn.execute(update(outbox).where(outbox.c.id == mail_id).values(
                sent_at=utcnow(), error=None))

    def mail_failed(self, mail_id: int, error: str, retry_in_seconds: float) -> None:
        """Record a failed delivery attempt and when to try again."""
        with self.engine.begin() as conn:
            conn.execute(update(outbox).where(outbox.c.id == mail_id).values(
                attempts=outbox.c.attempts + 1, error=error,
                next_attempt_at=utcnow() + dt.timedelta(seconds=retry_in_seconds)))

    def last_mail_of_kind(self, kind: str) -> Row | None:
        """The newest message of a kind (sent or not), for rate limits."""
        query = select(outbox).where(outbox.c.kind == kind).order_by(outbox.c.id.desc()).limit(1)
        with self.engine.connect() as conn:
            return conn.execute(query).first()
