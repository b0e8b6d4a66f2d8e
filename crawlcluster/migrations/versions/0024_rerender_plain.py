"""render="auto" re-renders what a late re-check learns: ``render_pages_plain`` lists the
pages of ``render="auto"`` rows parsed from a plain fetch, with their key (host, callback,
URL shape), and ``render_hosts`` counts the pages of a key sent back to the browser once
it was found to need one (``rerendered``) and those left as parsed plainly past
``render_auto_rerender_max`` (``rerender_skipped``).

A table of its own rather than a column of crawl_tasks: only ``render="auto"`` pages
parsed plainly get a row, the frontier's hot table and its indexes stay as they are, and
the rows of one key are one index range when that key flips.

Revision ID: 0024
Revises: 0023
Create Date: 2026-11-30
"""
import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "render_pages_plain",
        sa.Column("task_id", sa.String(32), primary_key=True),
        sa.Column("project", sa.String(200), nullable=False),
        sa.Column("host", sa.String(300), nullable=False),
        sa.Column("callback", sa.String(200), nullable=False),
        sa.Column("shape", sa.String(500), nullable=False),
        sa.Column("parsed_at", sa.Double, nullable=False),
    )
    op.create_index("ix_render_pages_plain_key", "render_pages_plain",
                    ["project", "host", "callback", "shape", "parsed_at"])
    op.add_column("render_hosts", sa.Column("rerendered", sa.Integer, nullable=False,
                                            server_default=sa.text("0")))
    op.add_column("render_hosts", sa.Column("rerender_skipped", sa.Integer, nullable=False,
                                            server_default=sa.text("0")))


def downgrade() -> None:
    with op.batch_alter_table("render_hosts") as batch:
        batch.drop_column("rerender_skipped")
        batch.drop_column("rerendered")
    op.drop_index("ix_render_pages_plain_key", table_name="render_pages_plain")
    op.drop_table("render_pages_plain")
