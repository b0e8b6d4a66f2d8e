"""Frontier queries over crawl_tasks: insert new URLs once, claim due rows, find lost ones.

Every function takes an open SQLAlchemy connection inside the caller's transaction and
touches a bounded number of rows; none loads the frontier into memory. On Postgres the
claims use ``FOR UPDATE SKIP LOCKED`` so two schedulers can never claim one row.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Iterable, Sequence

from sqlalchemy import and_, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from crawlcluster.schema import (
    CANCELLED,
    DONE,
    FAILED,
    FINISHED,
    PENDING,
    QUEUED,
    RUNNING,
    TASK_STATES,
    crawl_tasks,
    projects,
)

logger = logging.getLogger(__name__)

# Columns a worker needs to fetch and parse a row; the scheduler sends only these.
DISPATCH_COLUMNS = (
    crawl_tasks.c.task_id,
    crawl_tasks.c.project,
    crawl_tasks.c.url,
    crawl_tasks.c.priority,
    crawl_tasks.c.depth,
    crawl_tasks.c.callback,
    crawl_tasks.c.fetch,
    crawl_tasks.c.data,
    crawl_tasks.c.dispatch_count,
)


def _insert(conn: Connection, table):
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def insert_tasks(conn: Connection, project: str, rows: Sequence[dict[str, Any]], max_pages: int | None = None) -> int:
    """Insert the rows whose task id is new, in one statement; return how many were new.

    With ``max_pages`` the project's row is locked while its budget is checked, so
    parse workers running side by side never create more than ``max_pages`` rows.
    """
    if not rows:
        return 0
    unique: dict[str, dict[str, Any]] = {}
    for row in rows:
        unique.setdefault(row["task_id"], row)
    candidates = list(unique.values())
    if max_pages is not None:
        remaining = _reserve_budget(conn, project, candidates, max_pages)
        candidates = candidates[:remaining]
        if not candidates:
            return 0
    stmt = _insert(conn, crawl_tasks).values(candidates).on_conflict_do_nothing(index_elements=["task_id"])
    inserted = len(conn.execute(stmt.returning(crawl_tasks.c.task_id)).all())
    if inserted:
        conn.execute(
            update(projects)
            .where(projects.c.name == project)
            .values(tasks_created=projects.c.tasks_created + inserted)
        )
    return inserted


def _reserve_budget(conn: Connection, project: str, candidates: list[dict[str, Any]], max_pages: int) -> int:
    """Lock the project row, drop candidates that already exist, return how many may be added."""
    created = conn.execute(
        select(projects.c.tasks_created).where(projects.c.name == project).with_for_update()
    ).scalar_one()
    if created >= max_pages:
        del candidates[:]
        return 0
    ids = [row["task_id"] for row in candidates]
    known = set(conn.execute(select(crawl_tasks.c.task_id).where(crawl_tasks.c.task_id.in_(ids))).scalars())
    candidates[:] = [row for row in candidates if row["task_id"] not in known]
    return max(0, max_pages - created)


def claim_due_tasks(conn: Connection, project: str, limit: int, deadline_seconds: float, now: float | None = None) -> list[dict[str, Any]]:
    """Claim up to ``limit`` due pending rows of ``project``, highest priority first, then
    oldest due; mark them queued with a deadline and return them (highest priority first)."""
    if limit <= 0:
        return []
    now = time.time() if now is None else now
    due = (
        select(crawl_tasks.c.task_id)
        .where(crawl_tasks.c.project == project, crawl_tasks.c.status == PENDING, crawl_tasks.c.next_run_at <= now)
        .order_by(crawl_tasks.c.priority.desc(), crawl_tasks.c.next_run_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    stmt = (
        update(crawl_tasks)
        .where(crawl_tasks.c.task_id.in_(due))
        .values(
            status=QUEUED,
            queued_at=now,
            deadline_at=now + deadline_seconds,
            dispatch_count=crawl_tasks.c.dispatch_count + 1,
            updated_at=now,
        )
        .returning(*DISPATCH_COLUMNS, crawl_tasks.c.next_run_at)
    )
    rows = [dict(r._mapping) for r in conn.execute(stmt)]
    rows.sort(key=lambda r: (-r["priority"], r["next_run_at"]))
    return rows


def reclaim_stale_tasks(conn: Connection, limit: int, deadline_seconds: float, now: float | None = None) -> list[dict[str, Any]]:
    """Rows queued past their deadline lost their message: give them a new deadline and
    return them to be sent again (of running projects only)."""
    now = time.time() if now is None else now
    running = select(projects.c.name).where(projects.c.status == RUNNING)
    stale = (
        select(crawl_tasks.c.task_id)
        .where(crawl_tasks.c.status == QUEUED, crawl_tasks.c.deadline_at < now, crawl_tasks.c.project.in_(running))
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    stmt = (
        update(crawl_tasks)
        .where(crawl_tasks.c.task_id.in_(stale))
        .values(
            queued_at=now,
            deadline_at=now + deadline_seconds,
            dispatch_count=crawl_tasks.c.dispatch_count + 1,
            updated_at=now,
        )
        .returning(*DISPATCH_COLUMNS)
    )
    return [dict(r._mapping) for r in conn.execute(stmt)]


def count_by_status(conn: Connection, project: str) -> dict[str, int]:
    """Rows of ``project`` per state; every state is present, zero when empty."""
    counts = dict.fromkeys(TASK_STATES, 0)
    stmt = (
        select(crawl_tasks.c.status, func.count())
        .where(crawl_tasks.c.project == project)
        .group_by(crawl_tasks.c.status)
    )
    for status, count in conn.execute(stmt):
        counts[status] = count
    return counts


def count_queued(conn: Connection, project: str) -> int:
    return conn.execute(
        select(func.count()).where(crawl_tasks.c.project == project, crawl_tasks.c.status == QUEUED)
    ).scalar_one()


def has_open_tasks(conn: Connection, project: str) -> bool:
    """Whether any row of ``project`` is still pending or queued."""
    stmt = select(crawl_tasks.c.task_id).where(
        crawl_tasks.c.project == project, crawl_tasks.c.status.in_((PENDING, QUEUED))
    ).limit(1)
    return conn.execute(stmt).first() is not None


def running_projects(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute(select(projects).where(projects.c.status == RUNNING).order_by(projects.c.name))
    return [dict(r._mapping) for r in rows]


def mark_finished(conn: Connection, project: str, now: float | None = None) -> bool:
    """Mark a running project finished; False if it was no longer running."""
    now = time.time() if now is None else now
    result = conn.execute(
        update(projects)
        .where(projects.c.name == project, projects.c.status == RUNNING)
        .values(status=FINISHED, finished_at=now, updated_at=now)
    )
    return result.rowcount == 1


def cancel_pending(conn: Connection, project: str, now: float | None = None) -> int:
    """Turn every pending row of ``project`` into cancelled; return how many."""
    now = time.time() if now is None else now
    result = conn.execute(
        update(crawl_tasks)
        .where(crawl_tasks.c.project == project, crawl_tasks.c.status == PENDING)
        .values(status=CANCELLED, error="cancelled by the user", updated_at=now)
    )
    return result.rowcount


def record_outcomes(conn: Connection, outcomes: Iterable[dict[str, Any]], now: float | None = None) -> int:
    """Write the end state of fetched rows. Rows with identical outcomes are updated in
    one statement, so a batch of successful pages costs one round trip."""
    now = time.time() if now is None else now
    groups: dict[tuple, list[str]] = {}
    for outcome in outcomes:
        key = (
            outcome["status"],
            outcome.get("status_code"),
            outcome.get("error"),
            outcome.get("final_url"),
        )
        groups.setdefault(key, []).append(outcome["task_id"])
    changed = 0
    for (status, status_code, error, final_url), ids in groups.items():
        assert status in (DONE, FAILED), status
        result = conn.execute(
            update(crawl_tasks)
            .where(crawl_tasks.c.task_id.in_(ids), crawl_tasks.c.status == QUEUED)
            .values(
                status=status,
                status_code=status_code,
                error=error,
                final_url=final_url,
                fetched_at=now,
                deadline_at=None,
                updated_at=now,
            )
        )
        changed += result.rowcount
    return changed


def project_row(conn: Connection, project: str) -> dict[str, Any] | None:
    row = conn.execute(select(projects).where(projects.c.name == project)).first()
    return dict(row._mapping) if row else None


def fetched_rows(conn: Connection, project: str) -> Iterable[dict[str, Any]]:
    """Every row of a project that ended done or failed (tests and reports)."""
    stmt = select(crawl_tasks).where(
        and_(crawl_tasks.c.project == project, crawl_tasks.c.status.in_((DONE, FAILED)))
    )
    return (dict(r._mapping) for r in conn.execute(stmt))
