"""Pipeline runs: the execution log of workflows (runs, steps, result items, engines).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    when = sa.DateTime(timezone=True)
    op.create_table(
        "pipeline_runs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("workflow", sa.String(128), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("dataset_id", sa.Integer),
        sa.Column("dataset_path", sa.Text, nullable=False),
        sa.Column("user", sa.String(255)),
        sa.Column("initiator", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("dedup_key", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("timeout_s", sa.Float),
        sa.Column("next_attempt_at", when),
        sa.Column("created_at", when, nullable=False),
        sa.Column("started_at", when),
        sa.Column("finished_at", when),
        sa.Column("duration_s", sa.Float),
        sa.Column("error", sa.Text),
        sa.Column("engine", sa.String(255)),
        sa.Column("rerun_of", sa.Integer),
    )
    op.create_index("pipeline_runs_dedup", "pipeline_runs", ["dedup_key"], unique=True,
                    sqlite_where=sa.text("dedup_key IS NOT NULL"),
                    postgresql_where=sa.text("dedup_key IS NOT NULL"))
    op.create_index("pipeline_runs_by_created", "pipeline_runs", ["created_at"])
    op.create_index("pipeline_runs_by_status", "pipeline_runs", ["status", "created_at"])
    op.create_index("pipeline_runs_by_workflow", "pipeline_runs", ["workflow", "created_at"])
    op.create_index("pipeline_runs_by_dataset", "pipeline_runs", ["dataset_id"])
    op.create_table(
        "pipeline_steps",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("pipeline_runs.id"), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("started_at", when, nullable=False),
        sa.Column("duration_s", sa.Float, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("message", sa.Text),
    )
    op.create_index("ix_pipeline_steps_run_id", "pipeline_steps", ["run_id"])
    op.create_table(
        "pipeline_results",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("pipeline_runs.id"), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_index("ix_pipeline_results_run_id", "pipeline_results", ["run_id"])
    op.create_table(
        "pipeline_engines",
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started_at", when, nullable=False),
        sa.Column("heartbeat_at", when, nullable=False),
        sa.Column("stopped_at", when),
    )


def downgrade() -> None:
    for table in ("pipeline_engines", "pipeline_results", "pipeline_steps", "pipeline_runs"):
        op.drop_table(table)
