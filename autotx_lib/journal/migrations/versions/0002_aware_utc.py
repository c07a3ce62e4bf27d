"""Timestamps are timezone-aware UTC.

PostgreSQL: every timestamp column becomes ``timestamp with time zone``; the values,
written as naive UTC, are read as UTC (``AT TIME ZONE 'UTC'``), so no instant moves.
SQLite has no zones and stores the same naive UTC text as before: nothing to change (the
journal's UTCDateTime type makes the values aware when read). A journal whose
``settings.schema_version`` said 1 now says 2.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TIMESTAMPS = {
    "datasets": ["next_attempt_at", "created_at", "updated_at", "started_at", "finished_at"],
    "events": ["at"],
    "sessions": ["started_at", "heartbeat_at", "ended_at"],
    "outbox": ["created_at", "next_attempt_at", "sent_at"],
    "jobs": ["next_attempt_at", "created_at", "started_at", "finished_at"],
    "settings": ["updated_at"],
}


def _retype(aware: bool) -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    for table, columns in TIMESTAMPS.items():
        for column in columns:
            op.alter_column(table, column, type_=sa.DateTime(timezone=aware),
                            postgresql_using=f"{column} AT TIME ZONE 'UTC'")


def upgrade() -> None:
    _retype(aware=True)
    op.execute("UPDATE settings SET value = '\"2\"' WHERE key = 'schema_version'")


def downgrade() -> None:
    _retype(aware=False)
    op.execute("UPDATE settings SET value = '\"1\"' WHERE key = 'schema_version'")
