"""Failed rows say what kind of failure ended them.

``error_kind`` is a short machine-readable cause beside the readable ``error`` text:
``http`` (with ``status_code``), ``timeout``, ``dns``, ``connect``, ``robots``,
``redirect``, ``body_too_large``, ``callback``, ``spider`` and the fetcher's and
browser's other kinds. ``crawlcluster failures`` and ``Crawl.failures()`` group by it.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29
"""
import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("crawl_tasks", sa.Column("error_kind", sa.String(32)))


def downgrade() -> None:
    op.drop_column("crawl_tasks", "error_kind")
