"""Pipeline runs and instrument sessions reported by the agents.

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

WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("agent_id", sa.String(255), primary_key=True),
        sa.Column("run_id", sa.Integer, primary_key=True),
        sa.Column("workflow", sa.String(128), nullable=False),
        sa.Column("version", sa.String(64)),
        sa.Column("dataset_id", sa.Integer),
        sa.Column("dataset_path", sa.Text),
        sa.Column("user", sa.String(255)),
        sa.Column("initiator", sa.String(255)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("max_attempts", sa.Integer),
        sa.Column("error", sa.Text),
        sa.Column("rerun_of", sa.Integer),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("started_at", WHEN),
        sa.Column("finished_at", WHEN),
        sa.Column("duration_s", sa.Float),
        sa.Column("next_attempt_at", WHEN),
        sa.Column("observed_at", WHEN, nullable=False),
        sa.Column("received_at", WHEN, nullable=False),
    )
    op.create_index("runs_by_created", "runs", ["created_at"])
    op.create_index("runs_by_status", "runs", ["status"])
    op.create_table(
        "sessions",
        sa.Column("agent_id", sa.String(255), primary_key=True),
        sa.Column("session_id", sa.Integer, primary_key=True),
        sa.Column("instrument", sa.String(255), nullable=False),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("project", sa.String(255)),
        sa.Column("booking", sa.String(255)),
        sa.Column("note", sa.Text),
        sa.Column("started_by", sa.String(32)),
        sa.Column("started_at", WHEN, nullable=False),
        sa.Column("last_activity_at", WHEN),
        sa.Column("ended_at", WHEN),
        sa.Column("end_reason", sa.String(32)),
        sa.Column("observed_at", WHEN, nullable=False),
        sa.Column("received_at", WHEN, nullable=False),
    )
    op.create_index("sessions_by_started", "sessions", ["started_at"])
    op.create_index("sessions_by_user", "sessions", ["user"])


def downgrade() -> None:
    op.drop_table("sessions")
    op.drop_table("runs")
