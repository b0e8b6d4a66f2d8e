"""The crawl_stats table (per project, host and minute: outcomes and cost, added by the store
stage) and the bounded reads of crawl_tasks that tell a user why a crawl waits.

What the figures mean, and the sentences made of them, are :mod:`crawlcluster.stats`'s.
"""

from __future__ import annotations

import bisect
import time
from typing import Any, Iterable, Mapping

from sqlalchemy import func, or_, select
from sqlalchemy.engine import Connection

from crawlcluster.db import execute_rows, statement, upsert_rows_statement
from crawlcluster.schema import (
    BOUND_COLUMNS,
    DONE,
    FAILED,
    LATENCY_BOUNDS,
    LATENCY_COLUMNS,
    PENDING,
    QUEUED,
    crawl_stats,
    crawl_tasks,
)
from crawlcluster.urls import url_host

COUNTERS = ("fetched", "done", "failed", "retried", "bytes", "fetch_seconds", "browser_seconds",
            *BOUND_COLUMNS, "rendered")


def record_batch(conn: Connection, project: str, pages: Iterable[Mapping[str, Any]], retried: set[str],
                 now: float | None = None) -> None:
    """Add one store batch's outcomes and costs, per host, to the current minute."""
    now = time.time() if now is None else now
    minute = float(int(now // 60) * 60)
    rows: dict[str, dict[str, Any]] = {}
    for page in pages:
        host = url_host(page["url"])
        row = rows.setdefault(host, {"project": project, "host": host, "minute": minute,
                                     **dict.fromkeys(COUNTERS, 0), **dict.fromkeys(LATENCY_COLUMNS, 0)})
        seconds = page.get("fetch_seconds")
        if seconds is not None or page.get("wire_bytes") is not None:
            row["fetched"] += 1
        if seconds is not None:
            row["fetch_seconds"] += seconds
            row[LATENCY_COLUMNS[bisect.bisect_left(LATENCY_BOUNDS, seconds)]] += 1
        row["bytes"] += page.get("wire_bytes") or 0
        row["browser_seconds"] += page.get("browser_seconds") or 0.0
        row["rendered"] += "browser_seconds" in page  # a page the browser tier rendered (or tried to)
        if page["id"] in retried:
            row["retried"] += 1
        elif page["status"] == DONE:
            row["done"] += 1
        elif page["status"] == FAILED:
            row["failed"] += 1
        for name, count in (page.get("bounds") or {}).items():
            if name in BOUND_COLUMNS:
                row[name] += count
        # a crawler-trap row the page's links added is a failed row of its own, never fetched
        row["failed"] += (page.get("bounds") or {}).get("trap_links", 0)
    if not rows:
        return
    execute_rows(conn, statement(conn, "crawl_stats.add", _add_statement), list(rows.values()))


def _add_statement(dialect: str) -> Any:
    """The upsert that adds a minute's figures to what the row has (built once per process)."""
    return upsert_rows_statement(dialect, crawl_stats, key=["project", "host", "minute"],
                                 update=lambda excluded: {
                                     name: getattr(crawl_stats.c, name) + getattr(excluded, name)
                                     for name in (*COUNTERS, *LATENCY_COLUMNS)})


def sums(conn: Connection, project: str, since: float | None = None, by_host: bool = False) -> Any:
    """Each of :data:`COUNTERS` summed over ``project``'s minutes (from ``since``): one row,
    or with ``by_host`` one per host (with its ``host``)."""
    columns = [func.coalesce(func.sum(getattr(crawl_stats.c, name)), 0).label(name) for name in COUNTERS]
    stmt = select(*columns).where(crawl_stats.c.project == project)
    if since is not None:
        stmt = stmt.where(crawl_stats.c.minute >= since)
    if by_host:
        return conn.execute(stmt.add_columns(crawl_stats.c.host).group_by(crawl_stats.c.host)).all()
    return conn.execute(stmt).one()


def first_minute(conn: Connection, project: str, since: float) -> float | None:
    """The earliest minute of ``project`` with figures from ``since`` on, None when none."""
    return conn.execute(select(func.min(crawl_stats.c.minute)).where(
        crawl_stats.c.project == project, crawl_stats.c.minute >= since)).scalar()


def project_totals(conn: Connection) -> list[tuple[str, int, int, int, int, float, float]]:
    """All-time (project, done, failed, retried, bytes, fetch seconds, browser seconds) of
    every project, for the Prometheus exporter."""
    names = ("done", "failed", "retried", "bytes", "fetch_seconds", "browser_seconds")
    rows = conn.execute(select(crawl_stats.c.project,
                               *[func.sum(getattr(crawl_stats.c, name)) for name in names])
                        .group_by(crawl_stats.c.project)).all()
    return [(project, int(done or 0), int(failed or 0), int(retried or 0), int(nbytes or 0),
             float(fetch_s or 0), float(browser_s or 0))
            for project, done, failed, retried, nbytes, fetch_s, browser_s in rows]


def latency_histogram(conn: Connection) -> list[tuple[str, float, int]]:
    """(project, upper bound, count) over all time, for the Prometheus histogram."""
    columns = [func.coalesce(func.sum(getattr(crawl_stats.c, name)), 0) for name in LATENCY_COLUMNS]
    rows = conn.execute(select(crawl_stats.c.project, *columns).group_by(crawl_stats.c.project)).all()
    return [(row[0], bound, int(count)) for row in rows for bound, count in zip(LATENCY_BOUNDS, row[1:])]


def pending_due_times(conn: Connection, project: str, now: float,
                      sample_rows: int) -> tuple[float | None, float | None, list[tuple[float, bool]]]:
    """When ``project``'s pending rows are due, read from the two ends of
    ix_crawl_tasks_pending_due (never by aggregating every pending row): the earliest and
    latest next_run_at, and of the first ``sample_rows`` rows not due yet (due time, whether
    it carries an error: a failure's back-off)."""
    of_project = (crawl_tasks.c.project == project, crawl_tasks.c.status == PENDING)
    first = conn.execute(select(crawl_tasks.c.next_run_at).where(*of_project)
                         .order_by(crawl_tasks.c.next_run_at).limit(1)).scalar()
    last = conn.execute(select(crawl_tasks.c.next_run_at).where(*of_project)
                        .order_by(crawl_tasks.c.next_run_at.desc()).limit(1)).scalar()
    later = conn.execute(select(crawl_tasks.c.next_run_at, crawl_tasks.c.error.is_not(None))
                         .where(*of_project, crawl_tasks.c.next_run_at > now)
                         .order_by(crawl_tasks.c.next_run_at).limit(sample_rows)).all()
    return first, last, [(due, bool(is_retry)) for due, is_retry in later]


def due_hosts(conn: Connection, project: str, now: float, sample_rows: int) -> list[str]:
    """The hosts of ``project``'s first ``sample_rows`` due rows in claim order
    (ix_crawl_tasks_due), sorted, each once."""
    stmt = (select(crawl_tasks.c.host)
            .where(crawl_tasks.c.project == project, crawl_tasks.c.status == PENDING,
                   crawl_tasks.c.next_run_at <= now)
            .order_by(crawl_tasks.c.priority.desc(), crawl_tasks.c.next_run_at)
            .limit(sample_rows))
    return sorted(set(conn.execute(stmt).scalars()))


def queued_unfetched(conn: Connection, project: str, queued_before: float,
                     sample_rows: int) -> list[tuple[Any, str, float]]:
    """(fetch options, host, queued at) of at most ``sample_rows`` of ``project``'s rows
    queued before ``queued_before`` whose page has not been fetched since."""
    not_fetched = or_(crawl_tasks.c.fetched_at.is_(None), crawl_tasks.c.fetched_at < crawl_tasks.c.queued_at)
    rows = conn.execute(select(crawl_tasks.c.fetch, crawl_tasks.c.host, crawl_tasks.c.queued_at)
                        .where(crawl_tasks.c.project == project, crawl_tasks.c.status == QUEUED, not_fetched,
                               crawl_tasks.c.queued_at <= queued_before)
                        .limit(sample_rows)).all()
    return [(fetch, host, queued_at) for fetch, host, queued_at in rows]
