"""Every project's ``Crawl.stats()`` figures at once, in a fixed few statements whatever the
number of projects: what the console's dashboard, ``/api/dashboard`` and ``crawlcluster
status`` show for all projects, and what ``Crawl.stats()`` reads for one.

The counts come from the row counters (one statement for every project), the windows and
all-time sums from crawl_stats (two statements), the due times, postponed hosts and queued
rows from :mod:`crawlcluster.database.overview` (one statement each, for the projects that
have pending or queued rows); the arithmetic and the sentences are :mod:`crawlcluster.stats`'s,
shared with the one-project path, so both show the same figures.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy.engine import Connection

from crawlcluster import stats
from crawlcluster.database import counters
from crawlcluster.database import overview as overview_rows
from crawlcluster.database import projects as lifecycle
from crawlcluster.db import get_engine
from crawlcluster.dispatch import lease
from crawlcluster.schema import PAUSED


def project_stats(conn: Connection, rows: list[dict[str, Any]], now: float | None = None,
                  figures: bool = True, waiting: bool = True) -> dict[str, dict[str, Any]]:
    """``Crawl.stats(figures, waiting)`` of each project of ``rows`` (its projects rows), by
    name, without the end-of-crawl figures (:func:`crawlcluster.stats.end_of_crawl`: Scrapy's
    closing counts, read one project at a time by ``Crawl.stats()``)."""
    now = time.time() if now is None else now
    names = [row["name"] for row in rows]
    if len(names) == 1:
        every = {names[0]: counters.project_counts(conn, names[0])}
    else:
        every = counters.counts(conn)
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        split = every.get(name) or counters.project_counts(conn, name)
        out[name] = {**split["rows"], "pages": split["pages"], "robots": split["robots"],
                     "items": split["items"]}
    with_pending = [name for name in names if out[name]["pending"]]
    with_queued = [name for name in names if out[name]["queued"]]
    due_rows = overview_rows.pending_due(conn, with_pending, now, stats.PENDING_SAMPLE_ROWS)
    due = {name: stats.due_figures(due_rows[name], now, out[name]["pending"]) if name in due_rows else {}
           for name in names}
    if figures:
        windows = overview_rows.window_sums(conn, names, stats.window_starts(now))
        totals = overview_rows.all_time_sums(conn, names)
    if waiting:
        health = lease.scheduler_health(conn, now=now)
        postponed = stats.postponed_sample(conn, with_pending, now)
        queued = stats.queued_sample(conn, with_queued, now)
    for row in rows:
        name, counts = row["name"], out[row["name"]]
        counts["next_due_at"] = due[name].get("next_due_at")
        if figures:
            open_rows = counts["pending"] + counts["queued"]
            counts.update(stats.figures_of(windows.get(name), totals.get(name), open_rows, now))
            counts["eta_seconds"] = stats.eta_seconds(row["status"], open_rows, counts["queued"],
                                                      counts["eta_seconds"], due[name], now)
        if waiting:
            counts["scheduler"] = health.as_dict()
            counts["waiting"] = stats.waiting_reasons(conn, row, counts, due[name], health.message, now,
                                                      postponed=postponed.get(name, []),
                                                      queued=queued.get(name, []))
        counts["status"] = row["status"]
        counts["pause_reason"] = row["pause_reason"] if row["status"] == PAUSED else None
        counts["paused_until"] = row["paused_until"] if row["status"] == PAUSED else None
    return out


def every_project_stats(database_url: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    """(name, figures) of every project, by name: what ``crawlcluster status`` lists."""
    with get_engine(database_url).connect() as conn:
        rows = lifecycle.all_projects(conn)
        every = project_stats(conn, rows)
    return [(row["name"], every[row["name"]]) for row in rows]
