"""A row counts its fetches that timed out, apart from its other retries.

``timeouts`` is what the retry policy's ``timeout_retries`` bounds: a page that answered
500 once and then timed out has had one timeout, not two, and is retried again. It is
set back to 0 when the row is fetched fine, made due again or re-opened after a failure.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""
import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("crawl_tasks", sa.Column("timeouts", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("crawl_tasks") as batch:
        batch.drop_column("timeouts")
