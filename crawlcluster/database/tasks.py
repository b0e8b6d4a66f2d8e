"""The frontier's rows come and go: new URLs inserted once, known ones made due again,
failed or cancelled ones re-opened, pending ones cancelled.

Every function takes an open connection inside the caller's transaction and touches a
bounded number of rows. How many retries a re-opened row gets is the retry policy's
(:mod:`crawlcluster.scheduling`): callers hand it in as ``retry_rules``, so this layer
imports nothing of the spider API.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Sequence

from sqlalchemy import and_, or_, select, update
from sqlalchemy.engine import Connection

from crawlcluster.database import counts, failures
from crawlcluster.database import hosts as host_rows
from crawlcluster.database.outcomes import RetryRulesOf
from crawlcluster.database.wakeup import notify_work
from crawlcluster.db import statement, upsert_statement
from crawlcluster.schema import (
    CANCELLED,
    DONE,
    FAILED,
    PENDING,
    QUEUED,
    crawl_tasks,
    projects,
)

logger = logging.getLogger(__name__)


def insert_tasks(conn: Connection, project: str, rows: Sequence[dict[str, Any]], max_pages: int | None = None,
                 reopen_failed: RetryRulesOf | None = None, new_ids: set[str] | None = None) -> int:
    """Insert the rows whose task id is new, in one statement; return how many were new.

    With ``max_pages`` the project's row is locked while its budget is checked, so
    parse workers running side by side never create more than ``max_pages`` rows.
    With ``reopen_failed`` (a user submitting URLs, never a page's links: a dead link
    found on every page must not be fetched again each time) known rows that failed
    become pending again, due now, with fresh retries (``reopen_failed`` gives a row's
    retry rules, as in :func:`reopen_failed_rows`). ``new_ids``, when given, gets the task ids
    that were new (the parse stage counts the crawler-trap rows it added by them).
    """
    if not rows:
        return 0
    unique: dict[str, dict[str, Any]] = {}
    for row in rows:
        unique.setdefault(row["task_id"], row)
    cancel_ids = [tid for tid, row in unique.items() if row.get("_cancel")]
    if cancel_ids:
        cancel_tasks(conn, cancel_ids)
    if reopen_failed:
        reopen = sorted(tid for tid, row in unique.items() if not row.get("_cancel"))
        reopen_failed_rows(conn, project, reopen_failed, task_ids=reopen,
                           now=min(row["updated_at"] for row in unique.values()))
    recrawl = [row for row in unique.values()
               if not row.get("_cancel")
               and (row.get("_force") or row.get("itag") is not None or (row.get("age") or -1) >= 0)]
    # in task-id order: two parse workers inserting overlapping links then take the index
    # entries' locks in the same order and cannot deadlock
    candidates = [{k: v for k, v in row.items() if not k.startswith("_")}
                  for _tid, row in sorted(unique.items()) if not row.get("_cancel")]
    if max_pages is not None:
        remaining = _reserve_budget(conn, project, candidates, max_pages)
        candidates = candidates[:remaining]
        if not candidates:
            return 0
    columns = {key for row in candidates for key in row}
    if any(len(row) != len(columns) for row in candidates):
        # one multi-row INSERT needs the same columns in every row (a crawler-trap row has an error)
        candidates = [{key: row.get(key) for key in columns} for row in candidates]
    new_ids = new_ids if new_ids is not None else set()
    new_ids.clear()
    # one statement SQLAlchemy compiles once per process and sends the rows in pages of VALUES
    # (its "insertmanyvalues", on SQLite too, within SQLite's bound on variables): a statement
    # built with .values(rows) is compiled again for every batch, a fifth of a parse worker's
    # busy time on pages of ~20 links, and a tenth of an embedded crawl's CPU
    stmt = statement(conn, "crawl_tasks.insert_new", _insert_new_statement)
    new_ids.update(conn.execute(stmt, candidates).scalars())
    inserted = len(new_ids)
    if recrawl:
        _make_due_again(conn, [row for row in recrawl if row["task_id"] not in new_ids])
    if inserted:
        conn.execute(
            update(projects)
            .where(projects.c.name == project)
            .values(tasks_created=projects.c.tasks_created + inserted)
        )
        notify_work(conn)  # rows to fetch, most of them due now
    return inserted


def _insert_new_statement(dialect: str) -> Any:
    """INSERT of new rows that returns the task ids that went in (built once per process)."""
    return upsert_statement(dialect, crawl_tasks, key=["task_id"]).returning(crawl_tasks.c.task_id)


# SQLite's SQLITE_MAX_VARIABLE_NUMBER since 3.32 (32766), with room to spare (the task ids
# one read of _reserve_budget looks up)
SQLITE_MAX_VARIABLES = 30_000


def _chunks(values: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [values[i:i + size] for i in range(0, len(values), size)]


def _make_due_again(conn: Connection, rows: list[dict[str, Any]]) -> int:
    """Known rows that finished are due again when forced, when their itag changed, or
    when their age has passed since the last fetch."""
    changed = 0
    for row in rows:
        now = row["updated_at"]
        condition = crawl_tasks.c.task_id == row["task_id"]
        finished = crawl_tasks.c.status.in_((DONE, FAILED))
        if not row.get("_force"):
            reasons = []
            if row.get("itag") is not None:
                reasons.append(or_(crawl_tasks.c.itag.is_(None), crawl_tasks.c.itag != row["itag"]))
            if (row.get("age") or -1) >= 0:
                reasons.append(crawl_tasks.c.fetched_at <= now - row["age"])
            condition = and_(condition, or_(*reasons))
        result = conn.execute(
            update(crawl_tasks).where(condition, finished).values(
                status=PENDING, next_run_at=row["next_run_at"], itag=row.get("itag"), age=row.get("age"),
                auto_recrawl=row.get("auto_recrawl", False),
                retries_left=row["retries_left"], priority=row["priority"], error=None, error_kind=None,
                timeouts=0, updated_at=now)
        )
        changed += result.rowcount
    return changed


def _reserve_budget(conn: Connection, project: str, candidates: list[dict[str, Any]], max_pages: int) -> int:
    """Lock the project row, drop candidates that already exist, return how many may be added."""
    if conn.dialect.name == "sqlite":
        # FOR UPDATE means nothing to SQLite, and pysqlite begins a transaction only at the
        # first write: write first, so this transaction holds the database's write lock
        # while it reads the budget and parse threads check it one at a time
        conn.execute(update(projects).where(projects.c.name == project)
                     .values(tasks_created=projects.c.tasks_created))
    created = conn.execute(
        select(projects.c.tasks_created).where(projects.c.name == project).with_for_update()
    ).scalar_one()
    if created >= max_pages:
        del candidates[:]
        return 0
    known: set[str] = set()
    for ids in _chunks([row["task_id"] for row in candidates], SQLITE_MAX_VARIABLES):
        stmt = select(crawl_tasks.c.task_id).where(crawl_tasks.c.task_id.in_(ids))
        known.update(conn.execute(stmt).scalars())
    candidates[:] = [row for row in candidates if row["task_id"] not in known]
    return max(0, max_pages - created)


def reopen_failed_rows(conn: Connection, project: str, retry_rules: RetryRulesOf, kind: str | None = None,
                       task_ids: Sequence[str] | None = None, now: float | None = None,
                       chunk_rows: int = 1000) -> int:
    """Failed rows of ``project`` (of one ``kind``, or only ``task_ids``) become pending, due
    now, with fresh retries (``retry_rules(fetch options).retries``, the rule the store stage
    retries by) and no error; return how many. Works through them a chunk at a
    time, so a project with a million failures is never read into memory at once.

    A re-opened row whose host's robots.txt stayed unreachable (or is postponed after an
    error) would only fail again at once, unfetched: in the same transaction such hosts
    forget their robots.txt failures, so the scheduler asks for robots.txt again first.
    """
    now = time.time() if now is None else now
    # a robots.txt row is the scheduler's own: it fetches robots.txt again when it needs it
    conditions = [crawl_tasks.c.project == project, crawl_tasks.c.status == FAILED,
                  counts.is_page(), *failures.failure_filter(kind)]
    id_chunks: list[Sequence[str] | None] = [None]
    if task_ids is not None:
        ids = list(task_ids)
        id_chunks = [ids[i:i + chunk_rows] for i in range(0, len(ids), chunk_rows)]
    reopened = 0
    for id_chunk in id_chunks:
        where = conditions + ([crawl_tasks.c.task_id.in_(id_chunk)] if id_chunk is not None else [])
        while True:  # each round turns up to chunk_rows failed rows into pending ones, so it ends
            found = conn.execute(select(crawl_tasks.c.task_id, crawl_tasks.c.fetch, crawl_tasks.c.host)
                                 .where(*where).order_by(crawl_tasks.c.task_id).limit(chunk_rows)).all()
            by_retries: dict[int, list[str]] = {}
            for tid, options, _host in found:
                by_retries.setdefault(retry_rules(options).retries, []).append(tid)
            for retries, tids in by_retries.items():
                reopened += conn.execute(
                    update(crawl_tasks).where(crawl_tasks.c.task_id.in_(tids), crawl_tasks.c.status == FAILED)
                    .values(status=PENDING, next_run_at=now, retries_left=retries, error=None,
                            error_kind=None, timeouts=0, queued_at=None, deadline_at=None,
                            updated_at=now)).rowcount
            host_rows.forget_robots_failures(conn, sorted({host for _tid, _options, host in found}), now)
            if len(found) < chunk_rows:
                break
    return reopened


# the error text of rows `cancel` (Crawl.cancel) turned from pending into cancelled; resume
# re-opens exactly these, not the rows a request's cancel=True cancelled
CANCELLED_BY_USER = "cancelled by the user"


def reopen_cancelled(conn: Connection, project: str, now: float | None = None) -> int:
    """Rows of ``project`` that a user's cancel stopped become pending again, due now."""
    now = time.time() if now is None else now
    result = conn.execute(
        update(crawl_tasks)
        .where(crawl_tasks.c.project == project, crawl_tasks.c.status == CANCELLED,
               crawl_tasks.c.error == CANCELLED_BY_USER)
        .values(status=PENDING, next_run_at=now, error=None, updated_at=now))
    return result.rowcount


def cancel_tasks(conn: Connection, ids: list[str], now: float | None = None) -> int:
    """Cancel the given rows that have not been dispatched."""
    now = time.time() if now is None else now
    result = conn.execute(
        update(crawl_tasks).where(crawl_tasks.c.task_id.in_(ids), crawl_tasks.c.status == PENDING)
        .values(status=CANCELLED, error="cancelled by a request with cancel=True", updated_at=now))
    return result.rowcount


def cancel_pending(conn: Connection, project: str, now: float | None = None) -> int:
    """Turn every pending row of ``project`` into cancelled; return how many."""
    now = time.time() if now is None else now
    result = conn.execute(
        update(crawl_tasks)
        .where(crawl_tasks.c.project == project, crawl_tasks.c.status == PENDING)
        .values(status=CANCELLED, error=CANCELLED_BY_USER, updated_at=now)
    )
    return result.rowcount


def reopen_start_rows(conn: Connection, project: str, interval: float, now: float) -> int:
    """The start rows (depth 0) of ``project`` that ended at least 0.9 ``interval`` ago become
    pending, due now: a URL-only submission's start URLs live only in the table, so its
    re-seeding timer opens them again. Returns how many."""
    return conn.execute(update(crawl_tasks).where(
        crawl_tasks.c.project == project, crawl_tasks.c.depth == 0, counts.NOT_QUEUED,
        crawl_tasks.c.status.in_((DONE, FAILED)), crawl_tasks.c.fetched_at <= now - interval * 0.9,
    ).values(status=PENDING, next_run_at=now, error=None, error_kind=None, updated_at=now)).rowcount


def fail_open_rows(conn: Connection, project: str, kind: str, reason: str, keep_ids: Sequence[str] = (),
                   now: float | None = None) -> int:
    """Every pending or queued page of ``project`` but ``keep_ids`` ends failed with ``kind``
    and ``reason`` (its robots.txt rows are the scheduler's and finish on their own); a
    message still in a queue for one of them is dropped where it arrives. Returns how many."""
    now = time.time() if now is None else now
    stmt = update(crawl_tasks).where(crawl_tasks.c.project == project, counts.is_page(),
                                     crawl_tasks.c.status.in_((PENDING, QUEUED)))
    if keep_ids:
        stmt = stmt.where(crawl_tasks.c.task_id.not_in(sorted(keep_ids)))
    return conn.execute(stmt.values(status=FAILED, error=reason, error_kind=kind, updated_at=now)).rowcount


def release_queued(conn: Connection, now: float) -> int:
    """Every queued row becomes pending, due now; returns how many. Only for a database one
    process owns (an embedded crawl's file at start), where no worker can hold a row."""
    return conn.execute(update(crawl_tasks).where(crawl_tasks.c.status == QUEUED).values(
        status=PENDING, next_run_at=now, queued_at=None, deadline_at=None, updated_at=now)).rowcount
