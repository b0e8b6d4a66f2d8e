"""Durable crawl statistics: what each batch cost, recorded by the store stage, read by
``Crawl.stats()``, ``crawlcluster status --watch`` and the Prometheus exporter.

Counts live in Postgres (``crawl_stats``, one row per project, host and minute), not in
Flower's memory, so they survive restarts. Every page message carries its own cost
(``wire_bytes``, ``fetch_seconds``, ``browser_seconds``); the store stage adds a batch's
costs in one upsert.
"""

from __future__ import annotations

import bisect
import time
from typing import Any, Iterable

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from crawlcluster.schema import DONE, FAILED, LATENCY_BOUNDS, LATENCY_COLUMNS, crawl_stats
from crawlcluster.urls import url_host

WINDOWS = {"5m": 300, "1h": 3600, "1d": 86400}
COUNTERS = ("fetched", "done", "failed", "retried", "bytes", "fetch_seconds", "browser_seconds")


def record_batch(conn: Connection, project: str, pages: Iterable[dict[str, Any]], retried: set[str],
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
        if page["id"] in retried:
            row["retried"] += 1
        elif page["status"] == DONE:
            row["done"] += 1
        elif page["status"] == FAILED:
            row["failed"] += 1
    if not rows:
        return
    insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(crawl_stats)
    stmt = insert.values(list(rows.values()))
    added = {name: getattr(crawl_stats.c, name) + getattr(stmt.excluded, name) for name in (*COUNTERS, *LATENCY_COLUMNS)}
    conn.execute(stmt.on_conflict_do_update(index_elements=["project", "host", "minute"], set_=added))


def _sums(conn: Connection, project: str, since: float | None = None, by_host: bool = False) -> Any:
    columns = [func.coalesce(func.sum(getattr(crawl_stats.c, name)), 0).label(name) for name in COUNTERS]
    stmt = select(*columns).where(crawl_stats.c.project == project)
    if since is not None:
        stmt = stmt.where(crawl_stats.c.minute >= since)
    if by_host:
        return conn.execute(stmt.add_columns(crawl_stats.c.host).group_by(crawl_stats.c.host)).all()
    return conn.execute(stmt).one()


def project_figures(conn: Connection, project: str, open_rows: int, now: float | None = None) -> dict[str, Any]:
    """Windows (5 minutes, an hour, a day, all time), pages/s now, cost totals and an ETA.

    ``open_rows`` (pending + queued now) and the last five minutes' pace give the ETA; it is
    an estimate that moves while the frontier still grows."""
    now = time.time() if now is None else now
    windows = {}
    for name, seconds in WINDOWS.items():
        row = _sums(conn, project, since=now - seconds)
        windows[name] = {"done": int(row.done), "failed": int(row.failed), "retried": int(row.retried)}
    total = _sums(conn, project)
    windows["all"] = {"done": int(total.done), "failed": int(total.failed), "retried": int(total.retried)}
    recent = _sums(conn, project, since=now - 60)
    first_minute = conn.execute(select(func.min(crawl_stats.c.minute)).where(
        crawl_stats.c.project == project, crawl_stats.c.minute >= now - 300)).scalar()
    span = max(1.0, now - first_minute) if first_minute is not None else 300.0
    five = windows["5m"]
    pace = (five["done"] + five["failed"]) / min(float(span), 300.0)
    return {
        "windows": windows,
        "pages_per_second": round(float(recent.done + recent.failed) / 60.0, 3),
        "pages_per_second_5m": round(pace, 3),
        "eta_seconds": round(open_rows / pace, 1) if pace > 0 and open_rows else (0.0 if not open_rows else None),
        "bytes": int(total.bytes),
        "fetch_seconds": round(float(total.fetch_seconds), 3),
        "browser_seconds": round(float(total.browser_seconds), 3),
        "retries": int(total.retried),
        "fetches": int(total.fetched),
    }


def host_figures(conn: Connection, project: str) -> list[dict[str, Any]]:
    """All-time cost per host of a project, most bytes first."""
    rows = _sums(conn, project, by_host=True)
    figures = [{"host": r.host, "fetches": int(r.fetched), "done": int(r.done), "failed": int(r.failed),
                "retries": int(r.retried), "bytes": int(r.bytes), "fetch_seconds": round(float(r.fetch_seconds), 3),
                "browser_seconds": round(float(r.browser_seconds), 3)} for r in rows]
    return sorted(figures, key=lambda f: -f["bytes"])


def latency_histogram(conn: Connection) -> list[tuple[str, float, int]]:
    """(project, upper bound, count) over all time, for the Prometheus histogram."""
    columns = [func.coalesce(func.sum(getattr(crawl_stats.c, name)), 0) for name in LATENCY_COLUMNS]
    rows = conn.execute(select(crawl_stats.c.project, *columns).group_by(crawl_stats.c.project)).all()
    return [(row[0], bound, int(count)) for row in rows for bound, count in zip(LATENCY_BOUNDS, row[1:])]
