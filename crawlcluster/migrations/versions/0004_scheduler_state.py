"""Scheduler state: the beat leader lease, per-project failure streaks, auto-pause and
deletion times, and the timers of @every methods and re-seeding.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "scheduler_lease",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("holder", sa.String(300), nullable=False),
        # the fencing token: grows by one at every change of leader
        sa.Column("token", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.Double, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
    )
    op.create_table(
        "project_timers",
        sa.Column("project", sa.String(200), primary_key=True),
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("interval_seconds", sa.Double, nullable=False),
        sa.Column("last_run_at", sa.Double),
        sa.Column("created_at", sa.Double, nullable=False),
    )
    with op.batch_alter_table("projects") as batch:
        batch.add_column(sa.Column("consecutive_failures", sa.Integer, nullable=False,
                                   server_default=sa.text("0")))
        batch.add_column(sa.Column("paused_until", sa.Double))
        batch.add_column(sa.Column("pause_reason", sa.Text))
        batch.add_column(sa.Column("delete_at", sa.Double))


def downgrade() -> None:
    with op.batch_alter_table("projects") as batch:
        for column in ("delete_at", "pause_reason", "paused_until", "consecutive_failures"):
            batch.drop_column(column)
    op.drop_table("project_timers")
    op.drop_table("scheduler_lease")
