"""Per-host politeness and re-crawl: robots.txt state and Crawl-delay per host, an index of
queued rows by host, and the auto_recrawl flag of a row.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hosts",
        sa.Column("host", sa.String(300), primary_key=True),
        # unknown | fetching | ok | missing | error
        sa.Column("robots_status", sa.String(16), nullable=False, server_default="unknown"),
        sa.Column("robots_body", sa.Text),
        sa.Column("crawl_delay", sa.Double),
        sa.Column("robots_fetched_at", sa.Double),
        sa.Column("robots_expires_at", sa.Double),
        sa.Column("blocked_until", sa.Double),
        sa.Column("updated_at", sa.Double, nullable=False),
    )
    op.add_column("crawl_tasks",
                  sa.Column("auto_recrawl", sa.Boolean, nullable=False, server_default=sa.false()))
    op.create_index(
        "ix_crawl_tasks_queued_host", "crawl_tasks", ["host"],
        postgresql_where=sa.text("status = 'queued'"), sqlite_where=sa.text("status = 'queued'"))


def downgrade() -> None:
    op.drop_index("ix_crawl_tasks_queued_host", table_name="crawl_tasks")
    with op.batch_alter_table("crawl_tasks") as batch:
        batch.drop_column("auto_recrawl")
    op.drop_table("hosts")
