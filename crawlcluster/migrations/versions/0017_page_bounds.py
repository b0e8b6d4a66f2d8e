"""What pages' bounds dropped or stopped, per project, host and minute: five ``crawl_stats`` counters.

``links_too_long`` (past max_url_length), ``links_bad_host`` (a host that cannot be a DNS
name), ``links_over_limit`` (past max_links_per_page), ``html_depth_capped`` (pages whose
nesting was capped at max_html_depth) and ``trap_links`` (links the crawler-trap guard
ended failed).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-01
"""
import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

COLUMNS = ("links_too_long", "links_bad_host", "links_over_limit", "html_depth_capped", "trap_links")


def upgrade() -> None:
    for name in COLUMNS:
        op.add_column("crawl_stats",
                      sa.Column(name, sa.BigInteger, nullable=False, server_default=sa.text("0")))


def downgrade() -> None:
    with op.batch_alter_table("crawl_stats") as batch:
        for name in COLUMNS:
            batch.drop_column(name)
