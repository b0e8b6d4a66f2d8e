"""Frontier queries over crawl_tasks: insert new URLs once, claim due rows, find lost ones.

Every function takes an open SQLAlchemy connection inside the caller's transaction and
touches a bounded number of rows; none loads the frontier into memory. On Postgres the
claims use ``FOR UPDATE SKIP LOCKED`` so two schedulers can never claim one row.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Iterable, Sequence

from sqlalchemy import and_, func, literal_column, or_, select, text, update
from sqlalchemy.engine import Connection

from crawlcluster import scheduling
from crawlcluster.database import projects as lifecycle
from crawlcluster.db import upsert
from crawlcluster.dispatch.robots import ROBOTS_CALLBACK, ROBOTS_ERROR, ROBOTS_UNKNOWN, ROBOTS_UNREACHABLE
from crawlcluster.messages import Outcome
from crawlcluster.schema import (
    CANCELLED,
    DISALLOWED,
    DONE,
    FAILED,
    FINISHED,
    PENDING,
    QUEUED,
    RUNNING,
    TASK_STATES,
    crawl_tasks,
    hosts,
    project_timers,
    projects,
    results,
)
from crawlcluster.urls import task_id, url_host

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
    crawl_tasks.c.host,
    crawl_tasks.c.etag,
    crawl_tasks.c.last_modified,
)


def task_row(project: str, url: str, request: Any, *, spider: Any, project_settings: dict[str, Any] | None,
             depth: int, now: float, fetch_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The crawl_tasks row for a normalised ``url`` requested by ``request``, its scheduling
    options resolved (request, then callback @config, spider, project, cluster default)."""
    callback_name = request.callback_name()
    schedule = scheduling.resolve(request, getattr(spider, callback_name, None), spider, project_settings)
    values = schedule.row_values()
    options = dict(fetch_options if fetch_options is not None else (request.fetch_options() or {}))
    options.update(values.pop("_fetch_extra"))
    row = {
        "task_id": task_id(project, url, options.get("method", "GET"), options.get("body")),
        "project": project,
        "url": url,
        "host": url_host(url),
        "status": PENDING,
        "depth": depth,
        "callback": callback_name,
        "fetch": options or None,
        "data": request.data,
        "next_run_at": max(now, request.exetime or now),
        "created_at": now,
        "updated_at": now,
        **values,
    }
    if request.force_update:
        row["_force"] = True
    if request.cancel:
        row["_cancel"] = True
    return row


def insert_tasks(conn: Connection, project: str, rows: Sequence[dict[str, Any]], max_pages: int | None = None,
                 reopen_failed: bool = False) -> int:
    """Insert the rows whose task id is new, in one statement; return how many were new.

    With ``max_pages`` the project's row is locked while its budget is checked, so
    parse workers running side by side never create more than ``max_pages`` rows.
    With ``reopen_failed`` (a user submitting URLs, never a page's links: a dead link
    found on every page must not be fetched again each time) known rows that failed
    become pending again, due now, with fresh retries.
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
        reopen_failed_rows(conn, project, task_ids=reopen, now=min(row["updated_at"] for row in unique.values()))
    recrawl = [row for row in unique.values()
               if not row.get("_cancel") and (row.get("_force") or row.get("itag") is not None or (row.get("age") or -1) >= 0)]
    # in task-id order: two parse workers inserting overlapping links then take the index
    # entries' locks in the same order and cannot deadlock
    candidates = [{k: v for k, v in row.items() if not k.startswith("_")}
                  for _tid, row in sorted(unique.items()) if not row.get("_cancel")]
    if max_pages is not None:
        remaining = _reserve_budget(conn, project, candidates, max_pages)
        candidates = candidates[:remaining]
        if not candidates:
            return 0
    stmt = upsert(conn, crawl_tasks, candidates, key=["task_id"])
    new_ids = set(conn.execute(stmt.returning(crawl_tasks.c.task_id)).scalars())
    inserted = len(new_ids)
    if recrawl:
        _make_due_again(conn, [row for row in recrawl if row["task_id"] not in new_ids])
    if inserted:
        conn.execute(
            update(projects)
            .where(projects.c.name == project)
            .values(tasks_created=projects.c.tasks_created + inserted)
        )
    return inserted


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
                retries_left=row["retries_left"], priority=row["priority"], error=None, error_kind=None, timeouts=0,
                updated_at=now)
        )
        changed += result.rowcount
    return changed


def fresh_retries(fetch_options: dict[str, Any] | None) -> int:
    """How many retries a row starts with: its own ``retries`` option, else its retry
    policy's or the cluster's (the rule the store stage retries by)."""
    return scheduling.RetryRules.of_row(fetch_options).retries


def reopen_failed_rows(conn: Connection, project: str, kind: str | None = None, task_ids: Sequence[str] | None = None,
                       now: float | None = None, chunk_rows: int = 1000) -> int:
    """Failed rows of ``project`` (of one ``kind``, or only ``task_ids``) become pending, due
    now, with fresh retries and no error; return how many. Works through them a chunk at a
    time, so a project with a million failures is never read into memory at once.

    A re-opened row whose host's robots.txt stayed unreachable (or is postponed after an
    error) would only fail again at once, unfetched: in the same transaction such hosts
    forget their robots.txt failures, so the scheduler asks for robots.txt again first.
    """
    now = time.time() if now is None else now
    # a robots.txt row is the scheduler's own: it fetches robots.txt again when it needs it
    conditions = [crawl_tasks.c.project == project, crawl_tasks.c.status == FAILED,
                  is_page(), *_failure_filter(kind)]
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
                by_retries.setdefault(fresh_retries(options), []).append(tid)
            for retries, tids in by_retries.items():
                reopened += conn.execute(
                    update(crawl_tasks).where(crawl_tasks.c.task_id.in_(tids), crawl_tasks.c.status == FAILED)
                    .values(status=PENDING, next_run_at=now, retries_left=retries, error=None, error_kind=None,
                            timeouts=0, queued_at=None, deadline_at=None, updated_at=now)).rowcount
            forget_robots_failures(conn, sorted({host for _tid, _options, host in found}), now)
            if len(found) < chunk_rows:
                break
    return reopened


def forget_robots_failures(conn: Connection, host_names: Sequence[str], now: float) -> int:
    """Hosts (of ``host_names``) whose robots.txt is unreachable or postponed after an error
    start again from ``unknown`` with no failures counted: their robots.txt is fetched
    before any of their rows. Returns how many hosts changed."""
    if not host_names:
        return 0
    return conn.execute(
        update(hosts).where(hosts.c.host.in_(list(host_names)),
                            hosts.c.robots_status.in_((ROBOTS_UNREACHABLE, ROBOTS_ERROR)))
        .values(robots_status=ROBOTS_UNKNOWN, robots_failures=0, robots_error=None, blocked_until=None,
                robots_expires_at=None, updated_at=now)).rowcount


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
    ids = [row["task_id"] for row in candidates]
    known = set(conn.execute(select(crawl_tasks.c.task_id).where(crawl_tasks.c.task_id.in_(ids))).scalars())
    candidates[:] = [row for row in candidates if row["task_id"] not in known]
    return max(0, max_pages - created)


def claim_due_tasks(conn: Connection, project: str, limit: int, deadline_seconds: float, now: float | None = None) -> list[dict[str, Any]]:
    """Claim up to ``limit`` due pending rows of ``project``, highest priority first, then
    oldest due, with no per-host limits; mark them queued with a deadline and return them."""
    return mark_queued(conn, due_candidates(conn, project, limit, now=now), deadline_seconds, now=now)


def due_candidates(conn: Connection, project: str, limit: int, skip_hosts: Iterable[str] = (),
                   now: float | None = None) -> list[dict[str, Any]]:
    """Lock (without claiming) up to ``limit`` due pending rows of ``project`` on hosts not in
    ``skip_hosts``, highest priority first then oldest due, with every column a worker
    needs; the caller picks which to queue in the same transaction with :func:`mark_queued`."""
    if limit <= 0:
        return []
    now = time.time() if now is None else now
    columns = list(DISPATCH_COLUMNS)
    if conn.dialect.name == "postgresql":
        # the row's physical address: valid until this transaction ends, since the row is locked
        columns.append(literal_column("ctid::text").label("_ctid"))
    stmt = (
        select(*columns)
        .where(crawl_tasks.c.project == project, crawl_tasks.c.status == PENDING, crawl_tasks.c.next_run_at <= now)
        .order_by(crawl_tasks.c.priority.desc(), crawl_tasks.c.next_run_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    skip = list(skip_hosts)
    if skip:
        stmt = stmt.where(crawl_tasks.c.host.not_in(skip))
    return _dicts(conn.execute(stmt))


def mark_queued(conn: Connection, rows: list[dict[str, Any]], deadline_seconds: float,
                now: float | None = None) -> list[dict[str, Any]]:
    """Mark rows from :func:`due_candidates` (still locked by the caller's transaction)
    queued with a deadline; return them, in the order given, as they are to be sent."""
    if not rows:
        return []
    now = time.time() if now is None else now
    if conn.dialect.name == "postgresql":
        # by the addresses the locking read returned: a TID scan, no index lookups. For a
        # few thousand TIDs in a small table the planner would rather scan the whole table.
        # (For the rest of this transaction only: the claim ends with this statement.)
        conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        which = text("ctid = ANY(CAST(:tids AS tid[]))").bindparams(tids=[r["_ctid"] for r in rows])
    else:
        which = crawl_tasks.c.task_id.in_([r["task_id"] for r in rows])
    conn.execute(
        update(crawl_tasks)
        .where(which)
        .values(status=QUEUED, queued_at=now, deadline_at=now + deadline_seconds,
                dispatch_count=crawl_tasks.c.dispatch_count + 1, updated_at=now)
    )
    for row in rows:  # the caller's own dicts, from due_candidates
        row.pop("_ctid", None)
        row["dispatch_count"] += 1
    return rows


def _dicts(result: Any) -> list[dict[str, Any]]:
    """Result rows as plain dicts (the column names are looked up once, not per row)."""
    keys = list(result.keys())
    return [dict(zip(keys, row)) for row in result.fetchall()]


def mark_disallowed(conn: Connection, ids: list[str], reason: str, now: float | None = None) -> int:
    """Rows robots.txt forbids: never fetched, ended with a readable reason."""
    if not ids:
        return 0
    now = time.time() if now is None else now
    result = conn.execute(update(crawl_tasks).where(crawl_tasks.c.task_id.in_(ids), crawl_tasks.c.status == PENDING)
                          .values(status=DISALLOWED, error=reason, updated_at=now))
    return result.rowcount


def mark_failed(conn: Connection, ids: list[str], kind: str, reason: str, now: float | None = None) -> int:
    """Pending rows the scheduler ends without fetching them (their host's robots.txt
    stayed unreachable), failed with ``kind`` and a readable reason."""
    if not ids:
        return 0
    now = time.time() if now is None else now
    result = conn.execute(update(crawl_tasks).where(crawl_tasks.c.task_id.in_(ids), crawl_tasks.c.status == PENDING)
                          .values(status=FAILED, error=reason, error_kind=kind, updated_at=now))
    return result.rowcount


def queued_counts(conn: Connection) -> tuple[dict[str, int], dict[str, int]]:
    """One pass over the queued rows of every project: (requests in flight per host, rows
    queued per project). In flight is what per-host limits count: a queued row stops
    counting once its page has been fetched and parsed (see :func:`mark_fetched`), not
    only when the store stage finishes it. Queued is what the in-queue limit counts."""
    not_fetched = or_(crawl_tasks.c.fetched_at.is_(None), crawl_tasks.c.fetched_at < crawl_tasks.c.queued_at)
    stmt = (select(crawl_tasks.c.project, crawl_tasks.c.host, func.count(), func.count().filter(not_fetched))
            .where(crawl_tasks.c.status == QUEUED).group_by(crawl_tasks.c.project, crawl_tasks.c.host))
    by_host: dict[str, int] = {}
    by_project: dict[str, int] = {}
    for project, host, queued, in_flight in conn.execute(stmt):
        by_project[project] = by_project.get(project, 0) + queued
        if in_flight:
            by_host[host] = by_host.get(host, 0) + in_flight
    return by_host, by_project


def mark_fetched(conn: Connection, ids: list[str], now: float | None = None) -> None:
    """The parse stage has these pages: their hosts' slots are free for the next requests."""
    if ids:
        now = time.time() if now is None else now
        conn.execute(update(crawl_tasks).where(crawl_tasks.c.task_id.in_(sorted(ids)), crawl_tasks.c.status == QUEUED)
                     .values(fetched_at=now))


def queue_row_now(conn: Connection, row: dict[str, Any], deadline_seconds: float, now: float | None = None) -> dict[str, Any]:
    """Insert (or re-open) ``row`` directly as queued and return it for publishing: the
    scheduler's own fetches (robots.txt) skip the pending stage."""
    now = time.time() if now is None else now
    values = {k: v for k, v in row.items() if not k.startswith("_")}
    values.update(status=QUEUED, queued_at=now, deadline_at=now + deadline_seconds, dispatch_count=1)
    stmt = upsert(
        conn, crawl_tasks, values, key=["task_id"],
        update={"status": QUEUED, "queued_at": now, "deadline_at": now + deadline_seconds, "error": None,
                "error_kind": None, "dispatch_count": crawl_tasks.c.dispatch_count + 1, "updated_at": now},
    ).returning(*DISPATCH_COLUMNS)
    return dict(conn.execute(stmt).one()._mapping)


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
    return _dicts(conn.execute(stmt))


# Written out, not bound: the partial index ix_crawl_tasks_project_state (every state but
# queued) serves a query only when the query states its condition, and SQLite matches
# that condition as text, never through a parameter.
NOT_QUEUED = crawl_tasks.c.status != literal_column(f"'{QUEUED}'")


def _project_rows(project: str) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """Conditions for the two halves of a project's rows, each found through its own index:
    every state but queued (ix_crawl_tasks_project_state), then queued (ix_crawl_tasks_stale)."""
    of_project = crawl_tasks.c.project == project
    return (of_project, NOT_QUEUED), (of_project, crawl_tasks.c.status == QUEUED)


def count_by_status(conn: Connection, project: str) -> dict[str, int]:
    """Rows of ``project`` per state; every state is present, zero when empty."""
    counts = dict.fromkeys(TASK_STATES, 0)
    for conditions in _project_rows(project):
        stmt = select(crawl_tasks.c.status, func.count()).where(*conditions).group_by(crawl_tasks.c.status)
        for status, count in conn.execute(stmt):
            counts[status] = count
    return counts


# Written out like NOT_QUEUED, so that SQLite matches the partial index's condition:
# ix_crawl_tasks_robots (migration 0011) holds only the robots.txt rows, one per host.
IS_ROBOTS = crawl_tasks.c.callback == literal_column(f"'{ROBOTS_CALLBACK}'")


def is_page() -> Any:
    """The condition that keeps a project's pages and leaves out its robots.txt rows.

    A robots.txt row is the scheduler's own request, one per host: it is not a page of the
    crawl. When it fails, the host's pages fail with kind ``robots`` naming its cause, so
    it is neither listed, counted nor re-opened as a page."""
    return crawl_tasks.c.callback != ROBOTS_CALLBACK


def robots_counts(conn: Connection, project: str) -> dict[str, int]:
    """``project``'s robots.txt rows per state (every state present), read through
    ix_crawl_tasks_robots: as many entries as the project has hosts, not pages."""
    counts = dict.fromkeys(TASK_STATES, 0)
    stmt = (select(crawl_tasks.c.status, func.count()).where(crawl_tasks.c.project == project, IS_ROBOTS)
            .group_by(crawl_tasks.c.status))
    for status, count in conn.execute(stmt):
        counts[status] = count
    return counts


def page_counts(conn: Connection, project: str, rows: dict[str, int] | None = None) -> dict[str, Any]:
    """``{"rows": ..., "pages": ..., "robots": ...}``, each a count per state: every row
    (what the scheduler and ``is_idle`` go by), the pages (what a user calls the crawl's
    pages: status, the progress bar, the summary) and the robots.txt rows. ``rows`` is
    :func:`count_by_status` when the caller has it already."""
    rows = count_by_status(conn, project) if rows is None else rows
    robots = robots_counts(conn, project)
    return {"rows": rows, "pages": {state: rows[state] - robots[state] for state in TASK_STATES}, "robots": robots}


def has_open_tasks(conn: Connection, project: str) -> bool:
    """Whether any row of ``project`` is still pending or queued."""
    for status in (PENDING, QUEUED):
        stmt = select(crawl_tasks.c.task_id).where(crawl_tasks.c.project == project, crawl_tasks.c.status == status)
        if conn.execute(stmt.limit(1)).first() is not None:
            return True
    return False


def failure_label(kind: str | None, status_code: int | None) -> str:
    """What a failed row is grouped under: ``HTTP 500`` for an HTTP status, else its kind
    (``timeout``, ``dns``, ``connect``, ``robots``, ``redirect``, ``callback``, ...)."""
    if kind == "http" and status_code is not None:
        return f"HTTP {status_code}"
    return kind or "other"


def _failure_filter(kind: str | None) -> list[Any]:
    """``kind`` as a user writes it: an error kind (``timeout``), an HTTP status (``500``,
    ``HTTP 500``) or a class of them (``5xx``)."""
    if not kind:
        return []
    text_kind = kind.strip().lower().removeprefix("http ").strip()
    if text_kind.isdigit():
        return [crawl_tasks.c.status_code == int(text_kind)]
    if len(text_kind) == 3 and text_kind[0].isdigit() and text_kind[1:] == "xx":
        low = int(text_kind[0]) * 100
        return [crawl_tasks.c.status_code >= low, crawl_tasks.c.status_code < low + 100]
    return [crawl_tasks.c.error_kind == text_kind]


def _failed_pages(project: str) -> list[Any]:
    """Failed rows of ``project`` that are pages (:func:`is_page`)."""
    return [crawl_tasks.c.project == project, crawl_tasks.c.status == FAILED, is_page()]


def failed_rows(conn: Connection, project: str, kind: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """``project``'s failed pages (oldest failure first), optionally of one kind."""
    stmt = (select(crawl_tasks.c.task_id, crawl_tasks.c.url, crawl_tasks.c.status_code, crawl_tasks.c.error,
                   crawl_tasks.c.error_kind, crawl_tasks.c.callback, crawl_tasks.c.depth, crawl_tasks.c.fetched_at,
                   crawl_tasks.c.updated_at)
            .where(*_failed_pages(project), *_failure_filter(kind))
            .order_by(crawl_tasks.c.updated_at, crawl_tasks.c.task_id))
    if limit is not None:
        stmt = stmt.limit(limit)
    rows = []
    for row in conn.execute(stmt):
        values = dict(row._mapping)
        values["kind"] = failure_label(values["error_kind"], values["status_code"])
        rows.append(values)
    return rows


def failure_counts(conn: Connection, project: str) -> dict[str, int]:
    """``project``'s failed pages per :func:`failure_label`, most first."""
    stmt = (select(crawl_tasks.c.error_kind, crawl_tasks.c.status_code, func.count())
            .where(*_failed_pages(project))
            .group_by(crawl_tasks.c.error_kind, crawl_tasks.c.status_code))
    counts: dict[str, int] = {}
    for kind, status_code, count in conn.execute(stmt):
        label = failure_label(kind, status_code)
        counts[label] = counts.get(label, 0) + count
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def running_projects(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute(select(projects).where(projects.c.status == RUNNING).order_by(projects.c.name))
    return [dict(r._mapping) for r in rows]


def cancel_pending(conn: Connection, project: str, now: float | None = None) -> int:
    """Turn every pending row of ``project`` into cancelled; return how many."""
    now = time.time() if now is None else now
    result = conn.execute(
        update(crawl_tasks)
        .where(crawl_tasks.c.project == project, crawl_tasks.c.status == PENDING)
        .values(status=CANCELLED, error=CANCELLED_BY_USER, updated_at=now)
    )
    return result.rowcount


def schedule_retries(conn: Connection, failures: list[Outcome], now: float | None = None) -> set[str]:
    """Put retryable failures back as pending with their back-off (or the server's
    Retry-After, up to the policy's cap); return the ids retried. Rows out of retries, and
    timeouts out of their policy's timeout retries, are left to record_outcomes."""
    now = time.time() if now is None else now
    wanted = {f["id"]: f for f in failures if f.get("retry")}
    if not wanted:
        return set()
    rows = conn.execute(
        select(crawl_tasks.c.task_id, crawl_tasks.c.retries_left, crawl_tasks.c.timeouts, crawl_tasks.c.fetch)
        .where(crawl_tasks.c.task_id.in_(list(wanted)), crawl_tasks.c.status == QUEUED,
               crawl_tasks.c.retries_left > 0)
        .with_for_update()
    ).all()
    retried = set()
    for task, retries_left, timeouts, options in rows:
        failure = wanted[task]
        rules = scheduling.RetryRules.of_row(options)
        total = rules.retries
        attempt = max(0, total - retries_left)  # retries so far, of any kind: picks the delay
        timed_out = failure.get("kind") == "timeout"
        if timed_out and timeouts >= rules.timeout_retries:
            # timeouts are counted on their own: a 500 before them is no timeout
            failure["error"] = f"{failure['error']} (after {timeouts + 1} tries that timed out; " \
                               f"timeout_retries={rules.timeout_retries})"
            continue
        delay = scheduling.retry_delay(rules.retry_delays, attempt)
        note = ""
        asked = failure.get("retry_after")
        if asked is not None:
            delay = min(float(asked), rules.retry_after_max_seconds)
            if asked > rules.retry_after_max_seconds:
                note = f"; Retry-After {asked:g}s capped by retry_after_max_seconds"
        conn.execute(
            update(crawl_tasks).where(crawl_tasks.c.task_id == task).values(
                status=PENDING, retries_left=retries_left - 1, next_run_at=now + delay,
                timeouts=timeouts + 1 if timed_out else timeouts,
                status_code=failure.get("code"), error_kind=failure.get("kind"),
                error=f"{failure['error']} (retry {attempt + 1} of {total} in {delay:g}s{note})",
                queued_at=None, deadline_at=None, fetched_at=now, updated_at=now)
        )
        retried.add(task)
    return retried


def record_outcomes(conn: Connection, outcomes: Iterable[dict[str, Any]], now: float | None = None) -> int:
    """Write the end state of fetched rows. Rows with identical outcomes are updated in
    one statement, so a batch of successful pages costs one round trip. Done rows marked
    auto_recrawl become pending again, due ``age`` seconds from now."""
    now = time.time() if now is None else now
    groups: dict[tuple, list[str]] = {}
    for outcome in outcomes:
        key = (
            outcome["status"],
            outcome.get("status_code"),
            outcome.get("error"),
            outcome.get("error_kind"),
            outcome.get("final_url"),
            outcome.get("etag"),
            outcome.get("last_modified"),
        )
        groups.setdefault(key, []).append(outcome["task_id"])
    changed = 0
    done_ids: list[str] = []
    for (status, status_code, error, error_kind, final_url, etag, last_modified), ids in groups.items():
        assert status in (DONE, FAILED), status
        values = dict(status=status, status_code=status_code, error=error, final_url=final_url,
                      error_kind=(error_kind or "other") if status == FAILED else None,
                      fetched_at=now, deadline_at=None, updated_at=now)
        if status == DONE:
            values["timeouts"] = 0
        if status == DONE and status_code != 304:
            values.update(etag=etag, last_modified=last_modified)
        result = conn.execute(
            update(crawl_tasks).where(crawl_tasks.c.task_id.in_(ids), crawl_tasks.c.status == QUEUED).values(**values)
        )
        changed += result.rowcount
        if status == DONE:
            done_ids.extend(ids)
    if done_ids:
        conn.execute(
            update(crawl_tasks)
            .where(crawl_tasks.c.task_id.in_(done_ids), crawl_tasks.c.auto_recrawl.is_(True),
                   crawl_tasks.c.status == DONE)
            .values(status=PENDING, next_run_at=now + crawl_tasks.c.age, updated_at=now)
        )
    return changed


def delete_due_projects(conn: Connection, batch_rows: int, now: float | None = None) -> list[str]:
    """Remove rows and results of stopped projects past their delete_at, a bounded batch per
    call; a project whose rows are all gone is removed too. Returns the projects removed."""
    now = time.time() if now is None else now
    removed = []
    for name in lifecycle.due_for_deletion(conn, now):
        # results, then each half of the rows through its index (queued rows of a stopped
        # project are rows whose messages were lost)
        steps = [(results, (results.c.project == name,))] + [(crawl_tasks, half) for half in _project_rows(name)]
        for table, conditions in steps:
            chunk = select(table.c.task_id).where(*conditions).limit(batch_rows).scalar_subquery()
            conn.execute(table.delete().where(table.c.task_id.in_(chunk)))
        if not any(conn.execute(select(table.c.task_id).where(*conditions).limit(1)).first() for table, conditions in steps):
            lifecycle.remove(conn, name)
            removed.append(name)
    return removed


def claim_due_timers(conn: Connection, now: float | None = None) -> list[tuple[str, str]]:
    """(project, timer) pairs whose interval has passed, of projects not paused or
    cancelled; their last run is set to now before they are sent."""
    now = time.time() if now is None else now
    due = conn.execute(
        select(project_timers.c.project, project_timers.c.name)
        .join(projects, projects.c.name == project_timers.c.project)
        .where(projects.c.status.in_((RUNNING, FINISHED)),
               project_timers.c.last_run_at + project_timers.c.interval_seconds <= now)
        .with_for_update(of=project_timers, skip_locked=True)
    ).all()
    for project, name in due:
        conn.execute(update(project_timers).where(project_timers.c.project == project, project_timers.c.name == name)
                     .values(last_run_at=now))
    return [(project, name) for project, name in due]


def set_timer(conn: Connection, project: str, name: str, interval_seconds: float, now: float | None = None) -> None:
    """Create or change a timer; its first run is one interval from now."""
    now = time.time() if now is None else now
    values = {"project": project, "name": name, "interval_seconds": interval_seconds, "last_run_at": now,
              "created_at": now}
    conn.execute(upsert(conn, project_timers, values, key=["project", "name"],
                        update={"interval_seconds": interval_seconds}))


def project_row(conn: Connection, project: str) -> dict[str, Any] | None:
    row = conn.execute(select(projects).where(projects.c.name == project)).first()
    return dict(row._mapping) if row else None


