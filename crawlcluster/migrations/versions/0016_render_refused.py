"""Requests the browser's guard proxy refused: ``render_workers.refused_requests``.

Every request a page makes in the browser passes the address guard; the subresources it
refused (an image, a fetch() or an iframe aimed at a private address) are counted here per
render worker process, beside its pages and crashes.

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-30
"""
import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("render_workers", sa.Column("refused_requests", sa.BigInteger, nullable=False,
                                              server_default=sa.text("0")))


def downgrade() -> None:
    with op.batch_alter_table("render_workers") as batch:
        batch.drop_column("refused_requests")
