"""Two partial indexes so that ``Crawl.stats()`` reads a bounded part of a large frontier.

``ix_crawl_tasks_robots`` holds a project's robots.txt rows (one per host) by state: page
counts subtract them from the row counts without reading the pages. ``ix_crawl_tasks_pending_due``
orders a project's pending rows by due time: the earliest and latest due time and the rows
not due yet are read from its ends instead of aggregating every pending row. A claim moves
rows out of ``pending``, so it adds no entry to either index.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""
import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

ROBOTS = sa.text("callback = '__robots__'")
PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    op.create_index("ix_crawl_tasks_robots", "crawl_tasks", ["project", "status"],
                    postgresql_where=ROBOTS, sqlite_where=ROBOTS)
    op.create_index("ix_crawl_tasks_pending_due", "crawl_tasks", ["project", "next_run_at"],
                    postgresql_where=PENDING, sqlite_where=PENDING)


def downgrade() -> None:
    op.drop_index("ix_crawl_tasks_pending_due", table_name="crawl_tasks")
    op.drop_index("ix_crawl_tasks_robots", table_name="crawl_tasks")
