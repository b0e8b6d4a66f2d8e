"""Projects from before the address guard learn their start hosts.

``submit()`` records the ``host:port`` of a project's start URLs in its settings
(``start_hosts``); the scheduler sends them in every fetch message as the hosts the address
guard trusts. A project created before that has none, so after an upgrade its private start
host (an intranet site, ``localhost``) would be refused. This fills them in from the rows a
submit made: its depth-0 rows that are not robots.txt rows. Nothing else changes; a project
that already has ``start_hosts`` is left alone.

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-30
"""
from urllib.parse import urlsplit

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

DEFAULT_PORTS = {"http": 80, "https": 443}
ROBOTS_CALLBACK = "__robots__"
MOST_SEEDS = 10_000  # a project's start URLs read to find its start hosts


def _host_port(url: str) -> str | None:
    """``host:port`` as crawlcluster.urls.host_port spells it at the time of this migration."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname or ""
    if not host:
        return None
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{port or DEFAULT_PORTS.get(parts.scheme.lower(), 80)}"


def upgrade() -> None:
    conn = op.get_bind()
    json_type = sa.JSON().with_variant(JSONB(), "postgresql")
    projects = sa.table("projects", sa.column("name", sa.String), sa.column("settings", json_type))
    tasks = sa.table("crawl_tasks", sa.column("project", sa.String), sa.column("url", sa.Text),
                     sa.column("depth", sa.Integer), sa.column("callback", sa.String))
    for name, settings in conn.execute(sa.select(projects.c.name, projects.c.settings)).all():
        settings = dict(settings or {})
        if settings.get("start_hosts"):
            continue
        seeds = conn.execute(sa.select(tasks.c.url).where(
            tasks.c.project == name, tasks.c.depth == 0, tasks.c.callback != ROBOTS_CALLBACK,
        ).limit(MOST_SEEDS)).scalars()
        hosts = sorted({h for h in map(_host_port, seeds) if h})
        if hosts:
            settings["start_hosts"] = hosts
            conn.execute(projects.update().where(projects.c.name == name).values(settings=settings))


def downgrade() -> None:
    pass  # start_hosts is a settings key newer code reads and older code ignores
