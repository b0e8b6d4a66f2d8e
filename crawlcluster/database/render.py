"""The browser tier's tables: screenshots, the render_workers rows that show each render
process's browser counters, and render_hosts, the hosts ``render="auto"`` found to need a
browser.
"""

from __future__ import annotations

from typing import Any, Iterator

from sqlalchemy import delete, func, select
from sqlalchemy.engine import Connection

from crawlcluster.db import upsert
from crawlcluster.schema import render_hosts, render_workers, screenshots


def replace_screenshots(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Store screenshot ``rows``, replacing an earlier shot of the same task."""
    if rows:
        conn.execute(delete(screenshots).where(screenshots.c.task_id.in_([r["task_id"] for r in rows])))
        conn.execute(screenshots.insert().values(rows))


def stream_screenshots(conn: Connection, project: str) -> Iterator[dict[str, Any]]:
    """``project``'s screenshots by task id, ``{"task_id", "url", "png"}`` with the PNG's
    bytes, read 50 rows at a time (a PNG is large)."""
    stmt = (select(screenshots.c.task_id, screenshots.c.url, screenshots.c.png)
            .where(screenshots.c.project == project).order_by(screenshots.c.task_id))
    for row in conn.execution_options(stream_results=True, yield_per=50).execute(stmt):
        yield {"task_id": row.task_id, "url": row.url, "png": bytes(row.png)}


def record_render_worker(conn: Connection, row: dict[str, Any], counters: dict[str, Any]) -> None:
    """Create a render worker's row, or change its ``counters`` when it exists."""
    conn.execute(upsert(conn, render_workers, row, key=["worker"], update=counters))


def render_worker_rows(conn: Connection) -> list[dict[str, Any]]:
    """Every render worker's row, by worker."""
    return [dict(r._mapping) for r in conn.execute(select(render_workers).order_by(render_workers.c.worker))]


def last_render_report(conn: Connection) -> float | None:
    """When any render worker last wrote its row; None when none ever did."""
    return conn.execute(select(func.max(render_workers.c.updated_at))).scalar()


def add_render_host(conn: Connection, values: dict[str, Any]) -> bool:
    """Insert a render_hosts row unless its (project, host) is known; True when it was new."""
    stmt = upsert(conn, render_hosts, values, key=["project", "host"]).returning(render_hosts.c.host)
    return conn.execute(stmt).first() is not None


def remembered_render_hosts(conn: Connection, project: str) -> set[str]:
    """The hosts of ``project`` known to need a browser."""
    return set(conn.execute(select(render_hosts.c.host).where(render_hosts.c.project == project)).scalars())


