"""Two counters that bound a row's dispatches: ``resends`` and ``crashes``.

``resends`` counts the times the scheduler sent a queued row again because its deadline
passed without an outcome, since the row was last claimed from ``pending``: the scheduler
fails the row once it has been sent ``max_dispatches`` times without an outcome.
(``dispatch_count`` counts every dispatch of the row's life, its retries included, so it
cannot tell a lost message from a retried 500.) ``crashes`` counts the parse runs of the
row that began and never finished (the worker process died or was killed past its time
limit): after ``max_worker_crashes`` the row fails instead of taking another worker down.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-09
"""
import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("crawl_tasks",
                  sa.Column("resends", sa.Integer, nullable=False, server_default=sa.text("0")))
    op.add_column("crawl_tasks",
                  sa.Column("crashes", sa.Integer, nullable=False, server_default=sa.text("0")))


def downgrade() -> None:
    with op.batch_alter_table("crawl_tasks") as batch:
        batch.drop_column("crashes")
        batch.drop_column("resends")
