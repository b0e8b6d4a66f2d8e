"""A host counts the failed fetches of its robots.txt, so a dead host ends.

``robots_failures`` counts the fetches of a host's robots.txt in a row that answered 5xx
or could not connect (a success sets it back to 0); ``robots_error`` keeps the last one's
kind and text. Once ``robots_failures`` reaches CRAWLCLUSTER_ROBOTS_ERROR_ATTEMPTS the
host's robots.txt is ``unreachable``: per RFC 9309 nothing on it is fetched, and its
pending rows end ``failed`` (kind ``robots``) with that reason.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""
import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("hosts", sa.Column("robots_failures", sa.Integer, nullable=False, server_default="0"))
    op.add_column("hosts", sa.Column("robots_error", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.drop_column("robots_error")
        batch.drop_column("robots_failures")
