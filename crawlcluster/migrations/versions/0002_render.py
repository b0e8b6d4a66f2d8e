"""The browser tier: hosts that need rendering, screenshots, render worker counters.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # render="auto": hosts whose pages needed a browser, per project
    op.create_table(
        "render_hosts",
        sa.Column("project", sa.String(200), primary_key=True),
        sa.Column("host", sa.String(300), primary_key=True),
        sa.Column("first_url", sa.Text, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("created_at", sa.Double, nullable=False),
    )
    # render option screenshot=True: one PNG per task, replaced when the page is rendered again
    op.create_table(
        "screenshots",
        sa.Column("task_id", sa.String(32), primary_key=True),
        sa.Column("project", sa.String(200), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("png", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
    )
    op.create_index("ix_screenshots_project", "screenshots", ["project", "task_id"])
    # one row per render worker process: pages, browser recycles, crashes and hung kills
    op.create_table(
        "render_workers",
        sa.Column("worker", sa.String(300), primary_key=True),
        sa.Column("hostname", sa.String(200), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("browser_pid", sa.Integer),
        sa.Column("browsers_launched", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("pages_rendered", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("render_failures", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("recycles", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("crashes", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("hung_kills", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("browser_pss_bytes", sa.BigInteger),
        sa.Column("browser_rss_bytes", sa.BigInteger),
        sa.Column("started_at", sa.Double, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("render_workers")
    op.drop_index("ix_screenshots_project", table_name="screenshots")
    op.drop_table("screenshots")
    op.drop_table("render_hosts")
