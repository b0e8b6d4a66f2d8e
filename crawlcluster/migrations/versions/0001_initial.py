"""Initial schema: projects, crawl_tasks and results.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "projects",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("spider", sa.String(500), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="running"),
        sa.Column("settings", JSONType, nullable=False, server_default=sa.text("'{}'")),
        sa.Column("max_pages", sa.BigInteger),
        sa.Column("max_depth", sa.Integer),
        sa.Column("rate", sa.Double),
        sa.Column("burst", sa.Double),
        sa.Column("queue_limit", sa.Integer),
        sa.Column("tasks_created", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.Column("finished_at", sa.Double),
    )
    op.create_table(
        "crawl_tasks",
        sa.Column("task_id", sa.String(32), primary_key=True),
        sa.Column("project", sa.String(200), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("host", sa.String(300), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("priority", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("depth", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("callback", sa.String(200), nullable=False, server_default="parse"),
        sa.Column("fetch", JSONType),
        sa.Column("data", JSONType),
        sa.Column("age", sa.Integer),
        sa.Column("itag", sa.String(200)),
        sa.Column("retries_left", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("next_run_at", sa.Double, nullable=False),
        sa.Column("queued_at", sa.Double),
        sa.Column("deadline_at", sa.Double),
        sa.Column("dispatch_count", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("status_code", sa.Integer),
        sa.Column("error", sa.Text),
        sa.Column("final_url", sa.Text),
        sa.Column("etag", sa.String(500)),
        sa.Column("last_modified", sa.String(100)),
        sa.Column("fetched_at", sa.Double),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
    )
    op.create_index(
        "ix_crawl_tasks_due", "crawl_tasks",
        ["project", sa.text("priority DESC"), "next_run_at"],
        postgresql_where=sa.text("status = 'pending'"), sqlite_where=sa.text("status = 'pending'"))
    op.create_index(
        "ix_crawl_tasks_stale", "crawl_tasks", ["deadline_at"],
        postgresql_where=sa.text("status = 'queued'"), sqlite_where=sa.text("status = 'queued'"))
    op.create_index("ix_crawl_tasks_project_status", "crawl_tasks", ["project", "status"])
    op.create_table(
        "results",
        sa.Column("task_id", sa.String(32), primary_key=True),
        sa.Column("item_index", sa.Integer, primary_key=True),
        sa.Column("project", sa.String(200), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("item", JSONType, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
    )
    op.create_index("ix_results_project", "results", ["project", "task_id"])


def downgrade() -> None:
    op.drop_table("results")
    op.drop_table("crawl_tasks")
    op.drop_table("projects")
