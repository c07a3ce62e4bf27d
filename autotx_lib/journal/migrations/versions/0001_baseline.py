"""Baseline: the journal as the release before migrations (commit 451bb5e) wrote it.

A journal of that release has no ``alembic_version`` table; the journal verifies its
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

# Frozen copy (not imported from schema.py, which moves on): table -> column names.
TABLES = {
    "datasets": ["id", "user", "name", "stamp", "state", "incoming_path", "processing_path",
                 "tmp_path", "dest_path", "final_path", "algorithm", "total_files",
                 "total_bytes", "copied_files", "copied_bytes", "attempts", "next_attempt_at",
                 "error", "manifest_path", "manifest_digest", "created_at", "updated_at",
                 "started_at", "finished_at"],
    "files": ["id", "dataset_id", "relpath", "size", "mtime_ns", "digest", "verified", "copies"],
    "events": ["id", "at", "dataset_id", "level", "kind", "message"],
    "sessions": ["id", "host", "pid", "version", "started_at", "heartbeat_at", "ended_at",
                 "clean", "state", "state_reason"],
    "outbox": ["id", "created_at", "kind", "recipient", "subject", "body", "attempts",
               "next_attempt_at", "sent_at", "error"],
    "jobs": ["id", "kind", "dataset_id", "state", "payload", "result", "attempts",
             "next_attempt_at", "created_at", "started_at", "finished_at", "duration_s", "error"],
    "settings": ["key", "value", "updated_at"],
}


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("stamp", sa.String(32), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("incoming_path", sa.Text, nullable=False),
        sa.Column("processing_path", sa.Text, nullable=False),
        sa.Column("tmp_path", sa.Text),
        sa.Column("dest_path", sa.Text),
        sa.Column("final_path", sa.Text),
        sa.Column("algorithm", sa.String(16), nullable=False),
        sa.Column("total_files", sa.Integer, nullable=False),
        sa.Column("total_bytes", sa.BigInteger, nullable=False),
        sa.Column("copied_files", sa.Integer, nullable=False),
        sa.Column("copied_bytes", sa.BigInteger, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime),
        sa.Column("error", sa.Text),
        sa.Column("manifest_path", sa.Text),
        sa.Column("manifest_digest", sa.String(128)),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("started_at", sa.DateTime),
        sa.Column("finished_at", sa.DateTime),
    )
    op.create_index("ix_datasets_state", "datasets", ["state"])
    op.create_table(
        "files",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("dataset_id", sa.Integer, sa.ForeignKey("datasets.id"), nullable=False),
        sa.Column("relpath", sa.Text, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("mtime_ns", sa.BigInteger, nullable=False),
        sa.Column("digest", sa.String(128)),
        sa.Column("verified", sa.Boolean, nullable=False),
        sa.Column("copies", sa.Integer, nullable=False),
        sa.UniqueConstraint("dataset_id", "relpath"),
    )
    op.create_index("files_by_dataset", "files", ["dataset_id", "verified"])
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.Column("dataset_id", sa.Integer, sa.ForeignKey("datasets.id")),
        sa.Column("level", sa.String(8), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
    )
    op.create_index("ix_events_at", "events", ["at"])
    op.create_table(
        "sessions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("started_at", sa.DateTime, nullable=False),
        sa.Column("heartbeat_at", sa.DateTime, nullable=False),
        sa.Column("ended_at", sa.DateTime),
        sa.Column("clean", sa.Boolean, nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("state_reason", sa.Text),
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("recipient", sa.Text, nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime),
        sa.Column("sent_at", sa.DateTime),
        sa.Column("error", sa.Text),
    )
    op.create_index("ix_outbox_sent_at", "outbox", ["sent_at"])
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("dataset_id", sa.Integer, sa.ForeignKey("datasets.id")),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("result", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("started_at", sa.DateTime),
        sa.Column("finished_at", sa.DateTime),
        sa.Column("duration_s", sa.Float),
        sa.Column("error", sa.Text),
    )
    op.create_index("ix_jobs_state", "jobs", ["state"])
    op.create_table(
        "settings",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    for table in ("settings", "jobs", "outbox", "sessions", "events", "files", "datasets"):
        op.drop_table(table)
