"""Deliveries: one row per (dataset, destination), for several destinations.

Datasets from before have none: the agent adds them when it next works on a dataset, and
a dataset already delivered counts as delivered to the primary destination.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    when = sa.DateTime(timezone=True)
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("dataset_id", sa.Integer, sa.ForeignKey("datasets.id"), nullable=False),
        sa.Column("destination", sa.String(64), nullable=False),
        sa.Column("required", sa.Boolean, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("next_attempt_at", when),
        sa.Column("tmp_path", sa.Text),
        sa.Column("dest_path", sa.Text),
        sa.Column("manifest_path", sa.Text),
        sa.Column("manifest_digest", sa.String(128)),
        sa.Column("delivered_at", when),
        sa.Column("updated_at", when, nullable=False),
        sa.UniqueConstraint("dataset_id", "destination"),
    )
    op.create_index("deliveries_by_state", "deliveries", ["state", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("deliveries_by_state", "deliveries")
    op.drop_table("deliveries")
