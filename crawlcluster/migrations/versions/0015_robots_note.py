"""What a host's robots.txt asked for that the cluster did not grant: ``hosts.robots_note``.

A Crawl-delay above ``max_crawl_delay_seconds`` is capped, and a robots.txt above
``max_robots_bytes`` is cut; the note says so where the host's state is shown
(``crawlcluster status PROJECT``), not only in a worker's log.

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-30
"""
import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("hosts", sa.Column("robots_note", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.drop_column("robots_note")
