"""The browser tier's tables: screenshots, the render_workers rows that show each render
process's browser counters, and render_hosts, the hosts ``render="auto"`` found to need a
browser.
"""

from __future__ import annotations

from typing import Any, Iterator

from sqlalchemy import case, delete, func, select, update
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


# render_hosts decisions (migration 0021)
RENDER, PLAIN, LEARNING = "render", "plain", "learning"
WHOLE_HOST = ("", "")  # (callback, shape) of a row that stands for its whole host


def add_render_host(conn: Connection, values: dict[str, Any]) -> bool:
    """Make ``values``' key a render key; True when it was not one before."""
    values = {"callback": "", "shape": "", "decision": RENDER, "updated_at": values["created_at"], **values}
    # a key learned as plain (or still learning) that the spider's needs_render says needs a
    # browser becomes a render key
    stmt = upsert(conn, render_hosts, values, key=["project", "host", "callback", "shape"],
                  update={"decision": RENDER, "reason": values.get("reason"),
                          "updated_at": values["updated_at"]},
                  where=render_hosts.c.decision != RENDER).returning(render_hosts.c.host)
    return conn.execute(stmt).first() is not None


def remembered_render_hosts(conn: Connection, project: str) -> set[str]:
    """The hosts of ``project`` with pages known to need a browser (the whole host or some
    of its callbacks and URL shapes)."""
    return set(conn.execute(select(render_hosts.c.host).where(
        render_hosts.c.project == project, render_hosts.c.decision == RENDER)).scalars())


def render_decisions(conn: Connection, project: str) -> dict[tuple[str, str, str], str]:
    """``{(host, callback, shape): decision}`` of ``project``: what its parse workers and its
    scheduler share about which pages need a browser."""
    rows = conn.execute(select(render_hosts.c.host, render_hosts.c.callback, render_hosts.c.shape,
                               render_hosts.c.decision).where(render_hosts.c.project == project))
    return {(r.host, r.callback, r.shape): r.decision for r in rows}


def render_host_rows(conn: Connection, project: str) -> list[dict[str, Any]]:
    """Every render_hosts row of ``project``, by host, callback and shape."""
    stmt = (select(render_hosts).where(render_hosts.c.project == project)
            .order_by(render_hosts.c.host, render_hosts.c.callback, render_hosts.c.shape))
    return [dict(r._mapping) for r in conn.execute(stmt)]


def record_sample(conn: Connection, values: dict[str, Any], agreed: bool, agreements: int) -> str:
    """Count one page compared both ways for ``values``' key (project, host, callback, shape;
    ``first_url``, ``reason`` and ``created_at`` for a new row) and return the key's decision
    after it: a mismatch makes it ``render`` for good, ``agreements`` agreeing samples make a
    learning key ``plain``. One statement per step, so parse workers counting at once add up."""
    key = ["project", "host", "callback", "shape"]
    conn.execute(upsert(conn, render_hosts, {**values, "decision": LEARNING,
                                             "updated_at": values["created_at"]}, key=key))
    c = render_hosts.c
    where = [c.project == values["project"], c.host == values["host"], c.callback == values["callback"],
             c.shape == values["shape"]]
    if agreed:
        changes: dict[Any, Any] = {
            c.agreed: c.agreed + 1,
            c.decision: case((c.decision == LEARNING, case((c.agreed + 1 >= agreements, PLAIN),
                                                           else_=LEARNING)), else_=c.decision)}
    else:
        changes = {c.mismatches: c.mismatches + 1, c.decision: RENDER, c.reason: values["reason"],
                   c.first_url: values["first_url"]}
    changes.update({c.samples: c.samples + 1, c.updated_at: values["created_at"]})
    conn.execute(update(render_hosts).where(*where).values(changes))
    return str(conn.execute(select(c.decision).where(*where)).scalar_one())
