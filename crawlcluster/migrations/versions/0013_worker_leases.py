"""Rows held by a live worker: ``crawl_tasks.held_by`` and the ``worker_leases`` table.

A worker process marks the rows of the batch it starts as held by it and renews its lease
from a heartbeat thread; the scheduler makes the queued rows of a holder whose lease
expired (a worker killed, frozen or cut off) due again within a lease, instead of waiting
for their queued deadline.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-29
"""
import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("crawl_tasks", sa.Column("held_by", sa.String(300)))
    op.create_table(
        "worker_leases",
        sa.Column("worker", sa.String(300), primary_key=True),
        sa.Column("expires_at", sa.Double, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("worker_leases")
    with op.batch_alter_table("crawl_tasks") as batch:
        batch.drop_column("held_by")
