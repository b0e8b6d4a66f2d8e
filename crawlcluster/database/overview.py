"""Every project's figures for the dashboard, ``/api/dashboard`` and ``crawlcluster status``
in a fixed few statements, whatever the number of projects: the crawl_stats windows, the
pending rows' due times, the hosts that hold pending rows back and the queued rows that may
wait for a browser (what :meth:`crawlcluster.Crawl.stats` reads one project at a time).

On Postgres the per-project samples (bounded reads along an index, as the one-project reads
take them) are LATERAL subqueries over the list of projects: one statement for all of them.
SQLite (the embedded crawl, one machine, few projects) reads them one project at a time with
the one-project functions of :mod:`crawlcluster.database.stats`.
"""

from __future__ import annotations

from typing import Any, Sequence

from sqlalchemy import case, func, select, text, union_all
from sqlalchemy.engine import Connection

from crawlcluster.database import hosts as host_rows
from crawlcluster.database import stats as stat_rows
from crawlcluster.schema import STAT_TOTAL_COLUMNS, crawl_stats, project_stat_deltas, project_stat_totals

WINDOW_COLUMNS = ("done", "failed", "retried")


def window_sums(conn: Connection, names: Sequence[str], since: dict[str, float]) -> dict[str, dict[str, Any]]:
    """Per project of ``names``: ``{window: {"done", "failed", "retried"}}`` for each window
    of ``since`` (its name and earliest minute, as :func:`stats.sums` takes ``since``), and
    ``first_minute_<window>``, its earliest minute with figures. One statement, reading the
    minutes of the oldest window only (ix_crawl_stats_minute: project, minute)."""
    if not names:
        return {}
    columns = []
    for window, start in since.items():
        recent = crawl_stats.c.minute >= start
        for name in WINDOW_COLUMNS:
            columns.append(func.coalesce(func.sum(case((recent, getattr(crawl_stats.c, name)), else_=0)), 0)
                           .label(f"{window}_{name}"))
        columns.append(func.min(case((recent, crawl_stats.c.minute))).label(f"first_{window}"))
    stmt = (select(crawl_stats.c.project, *columns)
            .where(crawl_stats.c.project.in_(list(names)), crawl_stats.c.minute >= min(since.values()))
            .group_by(crawl_stats.c.project))
    out: dict[str, dict[str, Any]] = {}
    for row in conn.execute(stmt):
        values = row._mapping
        out[row.project] = {window: {name: values[f"{window}_{name}"] for name in WINDOW_COLUMNS}
                            for window in since}
        out[row.project].update({f"first_minute_{window}": values[f"first_{window}"] for window in since})
    return out


def all_time_sums(conn: Connection, names: Sequence[str]) -> dict[str, Any]:
    """Per project of ``names``: :data:`stat_rows.COUNTERS` summed over all its minutes
    (rows with those attributes, as :func:`stats.sums` returns), from the all-time totals
    and the deltas not folded into them yet (migration 0022): O(projects), one statement."""
    if not names:
        return {}
    parts = union_all(
        select(project_stat_totals).where(project_stat_totals.c.project.in_(list(names))),
        select(project_stat_deltas).where(project_stat_deltas.c.project.in_(list(names)))).subquery()
    columns = [func.sum(getattr(parts.c, name)).label(name) for name in STAT_TOTAL_COLUMNS]
    stmt = select(parts.c.project, *columns).group_by(parts.c.project)
    return {row.project: row for row in conn.execute(stmt)}


PG_DUE = text("""
    SELECT p.name,
           (SELECT next_run_at FROM crawl_tasks WHERE project = p.name AND status = 'pending'
            ORDER BY next_run_at LIMIT 1) AS first,
           (SELECT next_run_at FROM crawl_tasks WHERE project = p.name AND status = 'pending'
            ORDER BY next_run_at DESC LIMIT 1) AS last,
           s.retries, s.next_retry, s.others, s.next_other
    FROM unnest(CAST(:names AS text[])) AS p(name)
    CROSS JOIN LATERAL (
        SELECT count(*) FILTER (WHERE is_retry) AS retries,
               min(due) FILTER (WHERE is_retry) AS next_retry,
               count(*) FILTER (WHERE NOT is_retry) AS others,
               min(due) FILTER (WHERE NOT is_retry) AS next_other
        FROM (SELECT next_run_at AS due, error IS NOT NULL AS is_retry FROM crawl_tasks
              WHERE project = p.name AND status = 'pending' AND next_run_at > :now
              ORDER BY next_run_at LIMIT :sample) AS later) AS s""")


def pending_due(conn: Connection, names: Sequence[str], now: float,
                sample_rows: int) -> dict[str, tuple[Any, Any, int, Any, int, Any]]:
    """Per project of ``names`` (those with pending rows): (earliest due, latest due,
    retries among the first ``sample_rows`` rows not due yet, the earliest of them, the
    others, the earliest of those), as :func:`stats.pending_due_times` reads them."""
    if not names:
        return {}
    if conn.dialect.name != "postgresql":
        return {name: _due_of(*stat_rows.pending_due_times(conn, name, now, sample_rows)) for name in names}
    rows = conn.execute(PG_DUE, {"names": list(names), "now": now, "sample": sample_rows})
    return {row.name: (row.first, row.last, int(row.retries), row.next_retry, int(row.others), row.next_other)
            for row in rows}


def _due_of(first: Any, last: Any, later: list[tuple[float, bool]]) -> tuple[Any, Any, int, Any, int, Any]:
    retries = [due for due, is_retry in later if is_retry]
    others = [due for due, is_retry in later if not is_retry]
    return first, last, len(retries), min(retries, default=None), len(others), min(others, default=None)


PG_POSTPONED = text("""
    SELECT p.name, h.host, h.robots_status, h.blocked_until
    FROM unnest(CAST(:names AS text[])) AS p(name)
    CROSS JOIN LATERAL (
        SELECT host, robots_status, blocked_until FROM hosts
        WHERE blocked_until > :now AND host IN (
            SELECT host FROM crawl_tasks WHERE project = p.name AND status = 'pending' AND next_run_at <= :now
            ORDER BY priority DESC, next_run_at LIMIT :sample)
        ORDER BY blocked_until, host LIMIT :limit) AS h""")


def postponed_hosts(conn: Connection, names: Sequence[str], now: float, sample_rows: int,
                    limit: int) -> dict[str, list[tuple[str, str, float]]]:
    """Per project of ``names``: at most ``limit`` postponed hosts among those of its first
    ``sample_rows`` due rows, as :func:`stats.due_hosts` and :func:`hosts.postponed_hosts`
    find them together."""
    out: dict[str, list[tuple[str, str, float]]] = {name: [] for name in names}
    if not names:
        return out
    if conn.dialect.name != "postgresql":
        for name in names:
            sample = stat_rows.due_hosts(conn, name, now, sample_rows)
            out[name] = host_rows.postponed_hosts(conn, sample, now, limit) if sample else []
        return out
    values = {"names": list(names), "now": now, "sample": sample_rows, "limit": limit}
    rows = conn.execute(PG_POSTPONED, values)
    for row in rows:
        out[row.name].append((row.host, row.robots_status, row.blocked_until))
    return out


# one pass over the queued rows (ix_crawl_tasks_stale; no index has queued rows by project, as
# each one would slow claims): bounded by the rows in flight, not by the frontier
PG_QUEUED = text("""
    SELECT project, "fetch", host, queued_at FROM (
        SELECT project, "fetch", host, queued_at, row_number() OVER (PARTITION BY project) AS n
        FROM crawl_tasks
        WHERE status = 'queued' AND project = ANY(CAST(:names AS text[]))
              AND (fetched_at IS NULL OR fetched_at < queued_at) AND queued_at <= :before) AS q
    WHERE n <= :sample""")


def queued_unfetched(conn: Connection, names: Sequence[str], queued_before: float,
                     sample_rows: int) -> dict[str, list[tuple[Any, str, float]]]:
    """Per project of ``names``: :func:`stats.queued_unfetched`'s sample of its rows (on
    Postgres read in one pass over the queued rows of every project of ``names``)."""
    if conn.dialect.name != "postgresql" or len(names) <= 1:  # one project: its LIMIT stops the scan early
        return {name: stat_rows.queued_unfetched(conn, name, queued_before, sample_rows) for name in names}
    out: dict[str, list[tuple[Any, str, float]]] = {name: [] for name in names}
    values = {"names": list(names), "before": queued_before, "sample": sample_rows}
    for row in conn.execute(PG_QUEUED, values):
        out[row.project].append((row.fetch, row.host, row.queued_at))
    return out
