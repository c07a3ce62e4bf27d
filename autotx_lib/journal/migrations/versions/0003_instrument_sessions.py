"""Instrument sessions and the files live-synced during them.

A journal of a development build between 451bb5e and migrations may have these tables
already (they were created on first use then): they are kept, their times made aware on
PostgreSQL as in 0002.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _exists(table: str) -> bool:
    context = op.get_context()
    if context.as_sql:  # offline (--dry-run SQL): show the statements
        return False
    return sa.inspect(op.get_bind()).has_table(table)


TIMESTAMPS = {"instrument_sessions": ["started_at", "last_activity_at", "ended_at"],
              "live_files": ["synced_at"]}


def _make_aware(table: str) -> None:
    if op.get_context().dialect.name == "postgresql":
        for column in TIMESTAMPS[table]:
            op.alter_column(table, column, type_=sa.DateTime(timezone=True),
                            postgresql_using=f"{column} AT TIME ZONE 'UTC'")


def upgrade() -> None:
    when = sa.DateTime(timezone=True)
    for table in TIMESTAMPS:
        if _exists(table):
            _make_aware(table)
    if not _exists("instrument_sessions"):
        op.create_table(
            "instrument_sessions",
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("instrument", sa.String(255), nullable=False),
            sa.Column("user", sa.String(255), nullable=False),
            sa.Column("project", sa.String(255)),
            sa.Column("booking", sa.String(255)),
            sa.Column("note", sa.Text),
            sa.Column("started_by", sa.String(32), nullable=False),
            sa.Column("started_at", when, nullable=False),
            sa.Column("last_activity_at", when, nullable=False),
            sa.Column("ended_at", when),
            sa.Column("end_reason", sa.String(32)),
        )
        op.create_index("one_open_session_per_instrument", "instrument_sessions",
                        ["instrument"], unique=True, sqlite_where=sa.text("ended_at IS NULL"),
                        postgresql_where=sa.text("ended_at IS NULL"))
    if not _exists("live_files"):
        op.create_table(
            "live_files",
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("session_id", sa.Integer, sa.ForeignKey("instrument_sessions.id"),
                      nullable=False),
            sa.Column("relpath", sa.Text, nullable=False),
            sa.Column("size", sa.BigInteger, nullable=False),
            sa.Column("mtime_ns", sa.BigInteger, nullable=False),
            sa.Column("digest", sa.String(128), nullable=False),
            sa.Column("staged_path", sa.Text, nullable=False),
            sa.Column("copies", sa.Integer, nullable=False),
            sa.Column("synced_at", when, nullable=False),
            sa.UniqueConstraint("session_id", "relpath"),
        )


def downgrade() -> None:
    op.drop_table("live_files")
    op.drop_table("instrument_sessions")
