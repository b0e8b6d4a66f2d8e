"""The browser tier's tables: screenshots, the render_workers rows that show each render
process's browser counters, and render_hosts, the hosts ``render="auto"`` found to need a
browser, and render_pages_plain, the pages of ``render="auto"`` rows parsed from a plain
fetch, rendered once more when their key turns out to need a browser.
"""

from __future__ import annotations

from typing import Any, Iterator

from sqlalchemy import case, delete, func, select, update
from sqlalchemy.engine import Connection

from crawlcluster.db import execute_rows, statement, upsert, upsert_rows_statement
from crawlcluster.schema import (
    DONE,
    PENDING,
    crawl_tasks,
    render_hosts,
    render_pages_plain,
    render_workers,
    screenshots,
)


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


def _key_where(key: tuple[str, str, str]) -> list[Any]:
    c = render_hosts.c
    return [c.host == key[0], c.callback == key[1], c.shape == key[2]]


def record_plain_pages(conn: Connection, project: str, rows: list[tuple[str, tuple[str, str, str]]],
                       now: float) -> None:
    """Note ``rows`` (task id, key) as pages of ``project`` parsed from a plain fetch (a page
    parsed plainly again keeps one row)."""
    if rows:
        values = [{"task_id": tid, "project": project, "host": key[0], "callback": key[1], "shape": key[2],
                   "parsed_at": now} for tid, key in rows]
        execute_rows(conn, statement(conn, "render_pages_plain.note", _note_plain_statement), values)


def _note_plain_statement(dialect: str) -> Any:
    """The upsert of a page parsed plainly (built once per process)."""
    return upsert_rows_statement(dialect, render_pages_plain, key=["task_id"],
                                 update=lambda excluded: {"parsed_at": excluded.parsed_at})


Key = tuple[str, str, str]  # (host, callback, shape)


def keys_needing_render(conn: Connection, project: str, keys: set[Key]) -> set[Key]:
    """Those of ``keys`` whose decision is ``render`` now (read fresh, not from a cache)."""
    if not keys:
        return set()
    decisions = render_decisions(conn, project)
    whole = {host for (host, callback, shape), d in decisions.items() if (callback, shape) == WHOLE_HOST
             and d == RENDER}
    return {key for key in keys if decisions.get(key) == RENDER or key[0] in whole}


def rerender_plain_pages(conn: Connection, project: str, key: tuple[str, str, str], max_pages: int,
                         due_at: float, now: float) -> tuple[int, int]:
    """The done rows of ``key`` parsed from a plain fetch become pending, due at ``due_at``,
    so they are rendered and parsed again, at most ``max_pages`` per key over the crawl (the
    ``rerendered`` count); those past that are forgotten and counted in ``rerender_skipped``.
    Rows of the key not done yet keep their note (the store stage calls this again when it
    records them). Returns (re-opened, skipped)."""
    p = render_pages_plain.c
    where = [p.project == project, p.host == key[0], p.callback == key[1], p.shape == key[2]]
    host_where = [render_hosts.c.project == project, *_key_where(key)]
    already = conn.execute(select(render_hosts.c.rerendered).where(*host_where)).scalar() or 0
    budget = max(0, max_pages - already)
    done = (select(p.task_id).join(crawl_tasks, crawl_tasks.c.task_id == p.task_id)
            .where(*where, crawl_tasks.c.status == DONE).order_by(p.parsed_at))
    ids = list(conn.execute(done.limit(budget)).scalars()) if budget else []
    reopened = 0
    if ids:
        reopened = conn.execute(update(crawl_tasks).where(crawl_tasks.c.task_id.in_(ids),
                                                          crawl_tasks.c.status == DONE)
                                .values(status=PENDING, next_run_at=due_at, error=None, error_kind=None,
                                        queued_at=None, deadline_at=None, updated_at=now)).rowcount
        conn.execute(delete(render_pages_plain).where(p.task_id.in_(ids)))
    skipped = 0
    if budget <= len(ids):  # the budget is spent: the key's other done pages stay as parsed
        over = list(conn.execute(done).scalars())
        skipped = len(over)
        for start in range(0, len(over), 500):
            conn.execute(delete(render_pages_plain).where(p.task_id.in_(over[start:start + 500])))
    if reopened or skipped:
        conn.execute(update(render_hosts).where(*host_where).values(
            rerendered=render_hosts.c.rerendered + reopened,
            rerender_skipped=render_hosts.c.rerender_skipped + skipped))
    return reopened, skipped


def rerender_totals(conn: Connection, project: str) -> tuple[int, int]:
    """(pages rendered again, pages left as parsed plainly) of ``project``'s keys."""
    row = conn.execute(select(func.coalesce(func.sum(render_hosts.c.rerendered), 0),
                              func.coalesce(func.sum(render_hosts.c.rerender_skipped), 0))
                       .where(render_hosts.c.project == project)).one()
    return int(row[0]), int(row[1])
