"""render="auto" that learns: ``render_hosts`` keyed by host, callback and URL shape, with
what the samples rendered both ways showed, and ``crawl_stats.rendered`` (pages rendered
per host and minute, for the share of pages a browser cost).

A row of ``render_hosts`` is one (project, host, callback, shape): ``decision`` is
``render`` (its pages go to the browser), ``plain`` (enough samples agreed: plain HTTP,
checked again now and then) or ``learning``; ``samples``, ``agreed`` and ``mismatches``
count the pages compared. Rows kept from before (a whole host that needed a browser) get
callback and shape ``''`` and decision ``render``, which still means the whole host.
The table is copied into a new one because its primary key grows (SQLite cannot alter one).

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-05
"""
import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "render_hosts_learned",
        sa.Column("project", sa.String(200), primary_key=True),
        sa.Column("host", sa.String(300), primary_key=True),
        sa.Column("callback", sa.String(200), primary_key=True),
        sa.Column("shape", sa.String(500), primary_key=True),
        sa.Column("decision", sa.String(16), nullable=False, server_default="render"),
        sa.Column("samples", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("agreed", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("mismatches", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("first_url", sa.Text, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("updated_at", sa.Double),
    )
    op.execute("INSERT INTO render_hosts_learned (project, host, callback, shape, decision, first_url, "
               "reason, created_at, updated_at) SELECT project, host, '', '', 'render', first_url, reason, "
               "created_at, created_at FROM render_hosts")
    op.drop_table("render_hosts")
    op.rename_table("render_hosts_learned", "render_hosts")
    if op.get_bind().dialect.name == "postgresql":  # the primary key's name follows the table's
        op.execute("ALTER INDEX render_hosts_learned_pkey RENAME TO render_hosts_pkey")
    op.add_column("crawl_stats", sa.Column("rendered", sa.BigInteger, nullable=False,
                                           server_default=sa.text("0")))


def downgrade() -> None:
    with op.batch_alter_table("crawl_stats") as batch:
        batch.drop_column("rendered")
    op.create_table(
        "render_hosts_old",
        sa.Column("project", sa.String(200), primary_key=True),
        sa.Column("host", sa.String(300), primary_key=True),
        sa.Column("first_url", sa.Text, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("created_at", sa.Double, nullable=False),
    )
    op.execute("INSERT INTO render_hosts_old (project, host, first_url, reason, created_at) "
               "SELECT project, host, min(first_url), min(reason), min(created_at) FROM render_hosts "
               "WHERE decision = 'render' GROUP BY project, host")
    op.drop_table("render_hosts")
    op.rename_table("render_hosts_old", "render_hosts")
