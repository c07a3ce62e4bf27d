"""Baseline: the hub's tables as the release before migrations created them.

A hub database of that release has no ``hub_alembic_version`` table; the hub checks its
tables match this schema, stamps it with this revision, then upgrades it.

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Frozen copy (not imported from store.py, which moves on): table -> column names.
TABLES = {
    "tokens": ["id", "name", "role", "agent_id", "hash", "created_at", "revoked_at"],
    "agents": ["id", "first_seen", "last_seen", "agent_time", "clock_offset_s", "interval_s",
               "state", "detail", "version", "heartbeat", "last_seq"],
    "events": ["id", "agent_id", "seq", "at", "received_at", "dataset_id", "level", "kind",
               "message"],
    "datasets": ["agent_id", "dataset_id", "user", "name", "state", "destination",
                 "total_files", "total_bytes", "copied_files", "copied_bytes", "attempts",
                 "error", "dest_path", "final_path", "created_at", "started_at",
                 "finished_at", "updated_at", "received_at"],
    "commands": ["id", "agent_id", "action", "args", "created_by", "created_at",
                 "expires_at", "state", "delivered_at", "acked_at", "result"],
    "audit": ["id", "at", "token_name", "action", "target", "detail", "result"],
}

WHEN = sa.DateTime(timezone=True)
ROW_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")  # SQLite autoincrements INTEGER


def upgrade() -> None:
    op.create_table(
        "tokens",
        sa.Column("id", ROW_ID, primary_key=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("agent_id", sa.String(255)),
        sa.Column("hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("revoked_at", WHEN),
    )
    op.create_table(
        "agents",
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("first_seen", WHEN, nullable=False),
        sa.Column("last_seen", WHEN, nullable=False),
        sa.Column("agent_time", WHEN),
        sa.Column("clock_offset_s", sa.Float),
        sa.Column("interval_s", sa.Float),
        sa.Column("state", sa.String(32)),
        sa.Column("detail", sa.Text),
        sa.Column("version", sa.String(32)),
        sa.Column("heartbeat", sa.Text),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "events",
        sa.Column("id", ROW_ID, primary_key=True),
        sa.Column("agent_id", sa.String(255), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("at", WHEN, nullable=False),
        sa.Column("received_at", WHEN, nullable=False),
        sa.Column("dataset_id", sa.Integer),
        sa.Column("level", sa.String(8), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.UniqueConstraint("agent_id", "seq", name="events_once"),
    )
    op.create_index("events_by_kind", "events", ["kind"])
    op.create_table(
        "datasets",
        sa.Column("agent_id", sa.String(255), primary_key=True),
        sa.Column("dataset_id", sa.Integer, primary_key=True),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("destination", sa.String(255)),
        sa.Column("total_files", sa.Integer, nullable=False),
        sa.Column("total_bytes", sa.BigInteger, nullable=False),
        sa.Column("copied_files", sa.Integer, nullable=False),
        sa.Column("copied_bytes", sa.BigInteger, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("dest_path", sa.Text),
        sa.Column("final_path", sa.Text),
        sa.Column("created_at", WHEN),
        sa.Column("started_at", WHEN),
        sa.Column("finished_at", WHEN),
        sa.Column("updated_at", WHEN, nullable=False),
        sa.Column("received_at", WHEN, nullable=False),
    )
    op.create_index("datasets_by_user", "datasets", ["user"])
    op.create_index("datasets_by_state", "datasets", ["state"])
    op.create_table(
        "commands",
        sa.Column("id", ROW_ID, primary_key=True),
        sa.Column("agent_id", sa.String(255), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("args", sa.Text, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("expires_at", WHEN, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("delivered_at", WHEN),
        sa.Column("acked_at", WHEN),
        sa.Column("result", sa.Text),
    )
    op.create_index("ix_commands_agent_id", "commands", ["agent_id"])
    op.create_table(
        "audit",
        sa.Column("id", ROW_ID, primary_key=True),
        sa.Column("at", WHEN, nullable=False),
        sa.Column("token_name", sa.String(128), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(255)),
        sa.Column("detail", sa.Text),
        sa.Column("result", sa.Text),
    )


def downgrade() -> None:
    for table in reversed(list(TABLES)):
        op.drop_table(table)
