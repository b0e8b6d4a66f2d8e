"""Claims: due rows locked and marked queued for the dispatcher, lost ones found again, and
the counts of rows in flight that per-host and in-queue limits go by.

Every function takes an open connection inside the caller's transaction and touches a
bounded number of rows; none loads the frontier into memory. On Postgres the claims use
``FOR UPDATE SKIP LOCKED`` so two schedulers can never claim one row.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Iterable

from sqlalchemy import func, literal_column, or_, select, text, update
from sqlalchemy.engine import Connection

from crawlcluster.database import stats
from crawlcluster.db import upsert
from crawlcluster.error_text import bounded_error
from crawlcluster.schema import (
    DISALLOWED,
    FAILED,
    PENDING,
    QUEUED,
    RUNNING,
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
    crawl_tasks.c.host,
    crawl_tasks.c.etag,
    crawl_tasks.c.last_modified,
)


def claim_due_tasks(conn: Connection, project: str, limit: int, deadline_seconds: float,
                    now: float | None = None) -> list[dict[str, Any]]:
    """Claim up to ``limit`` due pending rows of ``project``, highest priority first, then
    oldest due, with no per-host limits; mark them queued with a deadline and return them."""
    return mark_queued(conn, due_candidates(conn, project, limit, now=now), deadline_seconds, now=now)


# What a claim chooses by (host slots, robots.txt): the rest of DISPATCH_COLUMNS is read only
# for the rows chosen (:func:`fill_candidates`)
CHOICE_COLUMNS = (crawl_tasks.c.task_id, crawl_tasks.c.url, crawl_tasks.c.host)


def reads_narrow(conn: Connection) -> bool:
    """Whether a claim on ``conn`` reads its candidates with :data:`CHOICE_COLUMNS` only and
    the chosen rows' other columns afterwards. On SQLite (the embedded crawl, one process,
    in-process reads) a claim of a host with a few free slots read hundreds of candidates
    with their JSON columns to choose a handful: 60 rows read per row sent on the small-page
    bench site, a quarter of the crawl's CPU. On Postgres the second read would be one more
    round trip per claim, so it reads every column at once."""
    return conn.dialect.name == "sqlite"


def due_candidates(conn: Connection, project: str, limit: int, skip_hosts: Iterable[str] = (),
                   now: float | None = None, narrow: bool = False) -> list[dict[str, Any]]:
    """Lock (without claiming) up to ``limit`` due pending rows of ``project`` on hosts not in
    ``skip_hosts``, highest priority first then oldest due, with every column a worker
    needs (``narrow``: :data:`CHOICE_COLUMNS` only, see :func:`reads_narrow`); the caller
    picks which to queue in the same transaction with :func:`mark_queued`."""
    if limit <= 0:
        return []
    now = time.time() if now is None else now
    columns: list[Any] = list(CHOICE_COLUMNS if narrow else DISPATCH_COLUMNS)
    if conn.dialect.name == "postgresql":
        # the row's physical address: valid until this transaction ends, since the row is locked
        columns.append(literal_column("ctid::text").label("_ctid"))
    stmt = (
        select(*columns)
        .where(crawl_tasks.c.project == project, crawl_tasks.c.status == PENDING,
               crawl_tasks.c.next_run_at <= now)
        .order_by(crawl_tasks.c.priority.desc(), crawl_tasks.c.next_run_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    skip = list(skip_hosts)
    if skip:
        stmt = stmt.where(crawl_tasks.c.host.not_in(skip))
    return _dicts(conn.execute(stmt))


def next_due_at(conn: Connection, project: str) -> float | None:
    """When the first pending row of ``project``'s highest priority is due (None: no pending
    row): one step down ix_crawl_tasks_due, so a scheduler with nothing due now can wake for
    a retry instead of at its next poll. Rows of a lower priority due earlier are not seen;
    they wait for the poll, as before."""
    stmt = (select(crawl_tasks.c.next_run_at)
            .where(crawl_tasks.c.project == project, crawl_tasks.c.status == PENDING)
            .order_by(crawl_tasks.c.priority.desc(), crawl_tasks.c.next_run_at).limit(1))
    due = conn.execute(stmt).scalar()
    return None if due is None else float(due)


def fill_candidates(conn: Connection, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Complete rows read with ``narrow`` by :func:`due_candidates` with the rest of
    DISPATCH_COLUMNS, in place; returns those still pending, in order (on SQLite the two
    reads are not one snapshot: a row cancelled or deleted in between is left out)."""
    by_id = {row["task_id"]: row for row in rows}
    ids = sorted(by_id)
    found: set[str] = set()
    for start in range(0, len(ids), FILL_CHUNK_ROWS):
        chunk = ids[start:start + FILL_CHUNK_ROWS]
        stmt = (select(*DISPATCH_COLUMNS)
                .where(crawl_tasks.c.task_id.in_(chunk), crawl_tasks.c.status == PENDING))
        for full in _dicts(conn.execute(stmt)):
            by_id[full["task_id"]].update(full)
            found.add(full["task_id"])
    return [row for row in rows if row["task_id"] in found]


# task ids per statement of :func:`fill_candidates` (SQLite's bound on variables, with room)
FILL_CHUNK_ROWS = 5000


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
        which: Any = text("ctid = ANY(CAST(:tids AS tid[]))").bindparams(tids=[r["_ctid"] for r in rows])
    else:
        which = crawl_tasks.c.task_id.in_([r["task_id"] for r in rows])
    conn.execute(
        update(crawl_tasks)
        .where(which)
        .values(status=QUEUED, queued_at=now, deadline_at=now + deadline_seconds,
                dispatch_count=crawl_tasks.c.dispatch_count + 1, resends=0, crashes=0, held_by=None,
                updated_at=now)
    )
    for row in rows:  # the caller's own dicts, from due_candidates
        row.pop("_ctid", None)
        row["dispatch_count"] += 1
    return rows


def _dicts(result: Any) -> list[dict[str, Any]]:
    """Result rows as plain dicts (the column names are looked up once, not per row)."""
    keys = list(result.keys())
    return [dict(zip(keys, row)) for row in result.fetchall()]


def queue_row_now(conn: Connection, row: dict[str, Any], deadline_seconds: float,
                  now: float | None = None) -> dict[str, Any]:
    """Insert (or re-open) ``row`` directly as queued and return it for publishing: the
    scheduler's own fetches (robots.txt) skip the pending stage."""
    now = time.time() if now is None else now
    values = {k: v for k, v in row.items() if not k.startswith("_")}
    values.update(status=QUEUED, queued_at=now, deadline_at=now + deadline_seconds, dispatch_count=1,
                  resends=0, crashes=0, held_by=None)
    stmt = upsert(
        conn, crawl_tasks, values, key=["task_id"],
        update={"status": QUEUED, "queued_at": now, "deadline_at": now + deadline_seconds, "error": None,
                "error_kind": None, "dispatch_count": crawl_tasks.c.dispatch_count + 1, "resends": 0,
                "crashes": 0, "held_by": None, "updated_at": now},
    ).returning(*DISPATCH_COLUMNS)
    return dict(conn.execute(stmt).one()._mapping)


def reclaim_stale_tasks(conn: Connection, limit: int, deadline_seconds: float, now: float | None = None,
                        max_dispatches: int | None = None) -> list[dict[str, Any]]:
    """Rows queued past their deadline lost their message: give them a new deadline and
    return them to be sent again (of running projects only). With ``max_dispatches``, rows
    already sent that often without an outcome are left to :func:`fail_over_dispatched`."""
    now = time.time() if now is None else now
    running = select(projects.c.name).where(projects.c.status == RUNNING)
    conditions = [crawl_tasks.c.status == QUEUED, crawl_tasks.c.deadline_at < now,
                  crawl_tasks.c.project.in_(running)]
    if max_dispatches is not None:
        conditions.append(crawl_tasks.c.resends + 1 < max_dispatches)
    stale = (
        select(crawl_tasks.c.task_id)
        .where(*conditions)
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
            resends=crawl_tasks.c.resends + 1,
            held_by=None,  # a new dispatch: whoever held the last one no longer does
            updated_at=now,
        )
        .returning(*DISPATCH_COLUMNS)
    )
    return _dicts(conn.execute(stmt))


# the kind of a row that the workers never answered for, when it had no error of its own
NO_OUTCOME_KIND = "dispatch"


def fail_over_dispatched(conn: Connection, limit: int, max_dispatches: int, now: float | None = None) -> int:
    """Rows queued past their deadline that were already sent ``max_dispatches`` times
    without an outcome (a parse task that raises on them, a message lost each time) end
    ``failed`` with the last error they had (a parse task's exception, noted by
    :func:`crawlcluster.database.outcomes.note_queued_error`) and how often they were sent;
    of running projects, at most ``limit``. Returns how many: without this bound such a row
    is fetched again every deadline for ever and holds its host's slots. Each is counted as
    failed in the durable statistics in the same transaction, as the store stage counts an
    outcome, so the statistics keep equal to the rows."""
    now = time.time() if now is None else now
    running = select(projects.c.name).where(projects.c.status == RUNNING)
    over = (
        select(crawl_tasks.c.task_id)
        .where(crawl_tasks.c.status == QUEUED, crawl_tasks.c.deadline_at < now,
               crawl_tasks.c.project.in_(running),
               crawl_tasks.c.resends + 1 >= max_dispatches)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    sent = f"sent to the workers {max_dispatches} times without an outcome (max_dispatches={max_dispatches})"
    failed = conn.execute(
        update(crawl_tasks).where(crawl_tasks.c.task_id.in_(over), crawl_tasks.c.status == QUEUED).values(
            status=FAILED,
            error=func.coalesce(crawl_tasks.c.error + f" ({sent})", sent),
            error_kind=func.coalesce(crawl_tasks.c.error_kind, NO_OUTCOME_KIND),
            deadline_at=None, updated_at=now)
        .returning(crawl_tasks.c.task_id, crawl_tasks.c.project, crawl_tasks.c.url)
    ).all()
    by_project: dict[str, list[dict[str, Any]]] = {}
    for task_id, project, url in failed:
        by_project.setdefault(project, []).append({"id": task_id, "url": url, "status": FAILED})
    for project, outcomes in by_project.items():
        stats.record_batch(conn, project, outcomes, set(), now=now)
    return len(failed)


def parse_crashes(conn: Connection, ids: list[str]) -> dict[str, int]:
    """Each queued row's count of parse runs that began and never ended (its worker process
    died, or was killed at the hard time limit, while processing it). A row missing from the
    answer is not queued (done, failed or cancelled meanwhile): there is nothing to parse."""
    if not ids:
        return {}
    return dict(conn.execute(select(crawl_tasks.c.task_id, crawl_tasks.c.crashes).where(
        crawl_tasks.c.task_id.in_(sorted(ids)), crawl_tasks.c.status == QUEUED)).all())


def begin_parse(conn: Connection, ids: list[str]) -> None:
    """The parse stage is about to run callbacks on these queued rows: count the run in
    ``crashes``, committed before the callbacks run; :func:`mark_fetched` resets it when the
    run ends, so only a run that took its process down leaves it counted."""
    if ids:
        conn.execute(update(crawl_tasks).where(crawl_tasks.c.task_id.in_(sorted(ids)),
                                               crawl_tasks.c.status == QUEUED)
                     .values(crashes=crawl_tasks.c.crashes + 1))


def resend_soon(conn: Connection, ids: list[str], at: float) -> int:
    """Queued rows whose message could not be published (the broker was down): their
    deadline moves to ``at``, when :func:`reclaim_stale_tasks` sends them again."""
    if not ids:
        return 0
    result = conn.execute(update(crawl_tasks).where(crawl_tasks.c.task_id.in_(sorted(ids)),
                                                    crawl_tasks.c.status == QUEUED)
                          .values(deadline_at=at))
    return result.rowcount


def resend_queued_before(conn: Connection, before: float) -> int:
    """The broker restarted without its data at about ``before``: every row queued earlier
    lost its message. Their deadlines become ``before``, so :func:`reclaim_stale_tasks`
    sends them again at once instead of after ``queued_deadline_seconds``; how many."""
    result = conn.execute(update(crawl_tasks).where(crawl_tasks.c.status == QUEUED,
                                                    crawl_tasks.c.queued_at < before,
                                                    crawl_tasks.c.deadline_at > before)
                          .values(deadline_at=before))
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
        conn.execute(update(crawl_tasks).where(crawl_tasks.c.task_id.in_(sorted(ids)),
                                               crawl_tasks.c.status == QUEUED)
                     .values(fetched_at=now, crashes=0))  # the parse run ended: it crashed nothing


def mark_disallowed(conn: Connection, ids: list[str], reason: str, now: float | None = None) -> int:
    """Rows robots.txt forbids: never fetched, ended with a readable reason."""
    if not ids:
        return 0
    now = time.time() if now is None else now
    result = conn.execute(update(crawl_tasks).where(crawl_tasks.c.task_id.in_(ids),
                                                    crawl_tasks.c.status == PENDING)
                          .values(status=DISALLOWED, error=bounded_error(reason), updated_at=now))
    return result.rowcount


def fail_pending_on_host(conn: Connection, project: str, host: str, kind: str, reason: str,
                         now: float | None = None) -> int:
    """End ``project``'s pending rows on ``host`` ``failed`` with ``kind`` and ``reason`` (the
    address guard refused the host's robots.txt for this project: its pages would be refused
    too); how many."""
    now = time.time() if now is None else now
    return conn.execute(update(crawl_tasks).where(crawl_tasks.c.project == project,
                                                  crawl_tasks.c.host == host, crawl_tasks.c.status == PENDING)
                        .values(status=FAILED, error=reason, error_kind=kind, updated_at=now)).rowcount


def mark_failed(conn: Connection, ids: list[str], kind: str, reason: str, now: float | None = None) -> int:
    """Pending rows the scheduler ends without fetching them (their host's robots.txt
    stayed unreachable), failed with ``kind`` and a readable reason."""
    if not ids:
        return 0
    now = time.time() if now is None else now
    result = conn.execute(update(crawl_tasks).where(crawl_tasks.c.task_id.in_(ids),
                                                    crawl_tasks.c.status == PENDING)
                          .values(status=FAILED, error=bounded_error(reason), error_kind=kind,
                                  updated_at=now))
    return result.rowcount
