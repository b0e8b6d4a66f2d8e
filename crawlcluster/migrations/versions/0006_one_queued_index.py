"""One partial index over queued rows instead of two.

Every claim moves thousands of rows to ``queued`` and each index over them costs an
insert per row; ix_crawl_tasks_queued_host took about 30% of the claim's UPDATE. The
scheduler's count of queued rows per host reads every queued row anyway, which
ix_crawl_tasks_stale (deadline_at WHERE status = 'queued') already lists.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_crawl_tasks_queued_host", table_name="crawl_tasks")


def downgrade() -> None:
    op.create_index(
        "ix_crawl_tasks_queued_host", "crawl_tasks", ["host"],
        postgresql_where=sa.text("status = 'queued'"), sqlite_where=sa.text("status = 'queued'"),
    )
