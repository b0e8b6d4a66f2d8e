"""Durable crawl statistics: per project, host and minute, outcomes and costs.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

LATENCY_COLUMNS = ("le_100ms", "le_250ms", "le_500ms", "le_1s", "le_2500ms", "le_5s", "le_10s", "le_inf")


def upgrade() -> None:
    op.create_table(
        "crawl_stats",
        sa.Column("project", sa.String(200), primary_key=True),
        sa.Column("host", sa.String(300), primary_key=True),
        sa.Column("minute", sa.Double, primary_key=True),
        sa.Column("fetched", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("done", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("failed", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("retried", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("bytes", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("fetch_seconds", sa.Double, nullable=False, server_default=sa.text("0")),
        sa.Column("browser_seconds", sa.Double, nullable=False, server_default=sa.text("0")),
        *[sa.Column(name, sa.BigInteger, nullable=False,
                    server_default=sa.text("0")) for name in LATENCY_COLUMNS],
    )
    op.create_index("ix_crawl_stats_minute", "crawl_stats", ["project", "minute"])


def downgrade() -> None:
    op.drop_index("ix_crawl_stats_minute", table_name="crawl_stats")
    op.drop_table("crawl_stats")
