"""Each destination's copy of a dataset (agents with several [[destinations]]).

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


def upgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.add_column(sa.Column("deliveries", sa.JSON))


def downgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.drop_column("deliveries")
