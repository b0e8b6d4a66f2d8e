"""End-of-crawl counts per project: ``crawl_tallies`` (responses by status code, items
scraped, items dropped by the pipelines by reason, links filtered as off-site or duplicate).

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-01
"""
import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "crawl_tallies",
        sa.Column("project", sa.String(200), primary_key=True),
        sa.Column("tally", sa.String(20), primary_key=True),
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("count", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    )


def downgrade() -> None:
    op.drop_table("crawl_tallies")
