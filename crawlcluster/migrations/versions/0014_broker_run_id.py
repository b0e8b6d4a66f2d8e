"""The broker run id the leader last saw: ``scheduler_lease.broker_run_id``.

A beat that takes the lease after Redis restarted empty compares Redis's run id with the
one stored here, so it sends the rows whose messages Redis lost again at once instead of
waiting for their queued deadline.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30
"""
import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("scheduler_lease", sa.Column("broker_run_id", sa.String(100)))


def downgrade() -> None:
    with op.batch_alter_table("scheduler_lease") as batch:
        batch.drop_column("broker_run_id")
