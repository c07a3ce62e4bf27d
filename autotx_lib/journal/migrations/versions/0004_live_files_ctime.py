"""Live-synced files remember their status-change time (ctime).

A file rewritten at the same size with its old modification time restored still gets a
new ctime; without it such a file was taken over from the session's staged copy, stale.
Rows from before have none: their staged copies are not trusted (copied again).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("live_files") as batch:
        batch.add_column(sa.Column("ctime_ns", sa.BigInteger, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("live_files") as batch:
        batch.drop_column("ctime_ns")
