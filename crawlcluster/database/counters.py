"""Exact row counts per project and state, read in O(projects): ``task_counts``,
``host_task_counts`` and the deltas not folded into them yet (migration 0020); and the same
fold for the all-time crawl figures per project (``project_stat_totals``, migration 0022).

How they stay exact. Triggers on crawl_tasks and results (not the code that writes them)
count every change, so a writer added tomorrow is counted too. On Postgres each statement
appends, per (project, host, kind, state) it changed, one signed delta to
``task_counts_delta`` in its own transaction: the delta commits or rolls back with the rows.
Appending never waits on another writer (no row every store transaction updates, no lock
order between transactions). :func:`fold` (beat's housekeeping) moves the deltas into the
totals in one statement, ``DELETE ... RETURNING`` feeding the upserts: each delta is in
exactly one of the two places at any snapshot, and a delta whose transaction commits after
the fold's snapshot is not deleted, so it waits for the next fold. Readers sum the totals
and the pending deltas in one statement, which sees one snapshot of both. On SQLite (one
writer at a time) row triggers update the totals directly and the delta table stays empty.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import false, func, literal, select, text, union_all
from sqlalchemy.engine import Connection

from crawlcluster.schema import (
    ITEMS,
    STAT_TOTAL_COLUMNS,
    TASK_STATES,
    host_task_counts,
    task_counts,
    task_counts_delta,
)

# folds on Postgres take this advisory lock, so that two never upsert the same totals at once
FOLD_LOCK = 424243

FOLD_SQL = text("""
    WITH gone AS (DELETE FROM task_counts_delta RETURNING project, host, robots, status, rows),
    by_host AS (
        INSERT INTO host_task_counts (project, host, status, rows)
        SELECT project, host, status, sum(rows) FROM gone WHERE NOT robots AND status <> 'items'
        GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (project, host, status) DO UPDATE SET rows = host_task_counts.rows + excluded.rows
        RETURNING 1),
    by_project AS (
        INSERT INTO task_counts (project, robots, status, rows)
        SELECT project, robots, status, sum(rows) FROM gone GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (project, robots, status) DO UPDATE SET rows = task_counts.rows + excluded.rows
        RETURNING 1)
    SELECT count(*) FROM gone""")


STAT_NAMES = ", ".join(STAT_TOTAL_COLUMNS)
FOLD_STATS_SQL = text(f"""
    WITH gone AS (DELETE FROM project_stat_deltas RETURNING project, {STAT_NAMES}),
    added AS (
        INSERT INTO project_stat_totals (project, {STAT_NAMES})
        SELECT project, {", ".join(f"sum({name})" for name in STAT_TOTAL_COLUMNS)} FROM gone
        GROUP BY project ORDER BY project
        ON CONFLICT (project) DO UPDATE SET
        {", ".join(f"{name} = project_stat_totals.{name} + excluded.{name}" for name in STAT_TOTAL_COLUMNS)}
        RETURNING 1)
    SELECT count(*) FROM gone""")


def fold(conn: Connection) -> int:
    """Move the pending deltas into the totals, the row counts' and the all-time crawl
    figures' (migration 0022; Postgres; nothing to do on SQLite); how many delta rows were
    folded. Run in the caller's transaction."""
    if conn.dialect.name != "postgresql":
        return 0
    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": FOLD_LOCK})
    return int(conn.execute(FOLD_SQL).scalar_one()) + int(conn.execute(FOLD_STATS_SQL).scalar_one())


def forget(conn: Connection, projects: list[str]) -> None:
    """Drop the totals of deleted ``projects`` that are zero once folded (their rows are
    gone): what a deletion leaves behind. Non-zero totals are kept: they would be a row
    that still exists."""
    if not projects:
        return
    fold(conn)
    conn.execute(task_counts.delete().where(task_counts.c.project.in_(projects), task_counts.c.rows == 0))
    conn.execute(host_task_counts.delete().where(host_task_counts.c.project.in_(projects),
                                                 host_task_counts.c.rows == 0))


def _project_parts(project: str | None) -> Any:
    """The totals and the pending deltas of ``project`` (every project when None), as one
    UNION ALL: (project, robots, status, rows)."""
    totals = select(task_counts.c.project, task_counts.c.robots, task_counts.c.status, task_counts.c.rows)
    deltas = select(task_counts_delta.c.project, task_counts_delta.c.robots, task_counts_delta.c.status,
                    task_counts_delta.c.rows)
    if project is not None:
        totals = totals.where(task_counts.c.project == project)
        deltas = deltas.where(task_counts_delta.c.project == project)
    return union_all(totals, deltas).subquery()


def counts(conn: Connection, project: str | None = None) -> dict[str, dict[str, Any]]:
    """Per project: ``{"rows": {state: n}, "robots": {state: n}, "pages": {state: n},
    "items": n}``, every state present; one statement (one snapshot), O(projects)."""
    parts = _project_parts(project)
    stmt = (select(parts.c.project, parts.c.robots, parts.c.status, func.sum(parts.c.rows))
            .group_by(parts.c.project, parts.c.robots, parts.c.status))
    out: dict[str, dict[str, Any]] = {}
    for name, robots, status, rows in conn.execute(stmt):
        entry = out.setdefault(name, _empty())
        if status == ITEMS:
            entry["items"] += int(rows)
        elif status in TASK_STATES:
            entry["robots" if robots else "pages"][status] += int(rows)
    if project is not None and project not in out:
        out[project] = _empty()
    for entry in out.values():
        entry["rows"] = {state: entry["pages"][state] + entry["robots"][state] for state in TASK_STATES}
    return out


def _empty() -> dict[str, Any]:
    return {"pages": dict.fromkeys(TASK_STATES, 0), "robots": dict.fromkeys(TASK_STATES, 0), "items": 0}


def project_counts(conn: Connection, project: str) -> dict[str, Any]:
    """:func:`counts` of one project."""
    return counts(conn, project)[project]


def host_counts(conn: Connection, project: str) -> dict[str, dict[str, int]]:
    """``project``'s pages per host and state (robots.txt rows left out): its host totals and
    pending deltas, O(hosts of the project)."""
    totals = (select(host_task_counts.c.host, host_task_counts.c.status, host_task_counts.c.rows)
              .where(host_task_counts.c.project == project))
    deltas = (select(task_counts_delta.c.host, task_counts_delta.c.status, task_counts_delta.c.rows)
              .where(task_counts_delta.c.project == project, task_counts_delta.c.robots == false(),
                     task_counts_delta.c.status != literal(ITEMS)))
    parts = union_all(totals, deltas).subquery()
    stmt = select(parts.c.host, parts.c.status, func.sum(parts.c.rows)).group_by(parts.c.host, parts.c.status)
    table: dict[str, dict[str, int]] = {}
    for host, status, rows in conn.execute(stmt):
        if rows:
            table.setdefault(host, {})[status] = int(rows)
    return table


def pending_deltas(conn: Connection) -> int:
    """Delta rows not folded yet (what a reader adds up beside the totals)."""
    return int(conn.execute(select(func.count()).select_from(task_counts_delta)).scalar_one())
