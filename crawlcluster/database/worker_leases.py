"""Worker leases: which worker process holds which queued rows, and until when it is alive.

A stage that starts a batch marks its rows ``held_by`` its process (:func:`hold`), checking
in the same statement that each row is still queued under the dispatch its message carries;
the process's heartbeat renews its ``worker_leases`` row (:func:`renew`). The scheduler's
stale sweep makes the queued rows of a holder whose lease expired due again
(:func:`release_expired`). What a lease means for a worker is :mod:`workers.lease`'s.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.engine import Connection

from crawlcluster.db import upsert
from crawlcluster.schema import PENDING, QUEUED, crawl_tasks, worker_leases

# rows per statement of :func:`hold` (a batch is far smaller; a bound on the IN list all the same)
HOLD_CHUNK_ROWS = 500


def renew(conn: Connection, worker: str, expires_at: float, now: float) -> None:
    """Write (or move) the lease of ``worker`` to ``expires_at``."""
    conn.execute(upsert(conn, worker_leases, {"worker": worker, "expires_at": expires_at, "updated_at": now},
                        key=["worker"], update={"expires_at": expires_at, "updated_at": now}))


def give_up(conn: Connection, worker: str) -> None:
    """Forget the lease of ``worker`` (a process that stops): rows it still holds are due again
    at the next sweep."""
    conn.execute(update(worker_leases).where(worker_leases.c.worker == worker).values(expires_at=0.0))


def hold(conn: Connection, worker: str, dispatches: Mapping[str, int | None], now: float) -> set[str]:
    """Mark the rows of ``dispatches`` (task id -> the dispatch its message carries, None for
    a message that carries none) held by ``worker``, those that are still queued under that
    dispatch; return their ids. A row ended, retried or sent again since is left alone: its
    message is late or redelivered. On PostgreSQL the rows stay locked until the caller's
    transaction ends, so of two transactions holding one row the second sees what the
    first wrote."""
    held: set[str] = set()
    items = sorted(dispatches.items())  # one lock order for every holder
    for start in range(0, len(items), HOLD_CHUNK_ROWS):
        chunk = items[start:start + HOLD_CHUNK_ROWS]
        by_dispatch: dict[int | None, list[str]] = {}
        for task_id, dispatch in chunk:
            by_dispatch.setdefault(dispatch, []).append(task_id)
        which = or_(*[
            crawl_tasks.c.task_id.in_(ids) if dispatch is None
            else and_(crawl_tasks.c.task_id.in_(ids), crawl_tasks.c.dispatch_count == dispatch)
            for dispatch, ids in by_dispatch.items()
        ])
        result = conn.execute(update(crawl_tasks).where(crawl_tasks.c.status == QUEUED, which)
                              .values(held_by=worker).returning(crawl_tasks.c.task_id))
        held.update(result.scalars())
    return held


def release_expired(conn: Connection, now: float) -> dict[str, int]:
    """Make the queued rows of every holder whose lease expired before ``now`` pending and
    due now (their host slots free again; the dispatch they go out with next makes any late
    message of theirs stale), and forget those leases; returns rows released per holder."""
    expired = list(conn.execute(select(worker_leases.c.worker).where(worker_leases.c.expires_at < now)
                                .with_for_update(skip_locked=True)).scalars())
    if not expired:
        return {}
    released: dict[str, int] = {}
    for worker in expired:
        result = conn.execute(
            update(crawl_tasks).where(crawl_tasks.c.status == QUEUED, crawl_tasks.c.held_by == worker)
            .values(status=PENDING, next_run_at=now, queued_at=None, deadline_at=None, held_by=None,
                    error=f"its worker {worker} stopped renewing its lease; sent again", updated_at=now)
        )
        released[worker] = result.rowcount
    conn.execute(delete(worker_leases).where(worker_leases.c.worker.in_(expired),
                                             worker_leases.c.expires_at < now))
    return released


def hand_on(conn: Connection, worker: str, ids: Sequence[str]) -> None:
    """``worker`` has sent the rows ``ids`` on to the next stage's queue: it holds them no
    more (unless the next stage's worker has already taken them over). A row in a queue is
    held by nobody until a worker receives its message."""
    if ids:
        conn.execute(update(crawl_tasks).where(crawl_tasks.c.task_id.in_(sorted(ids)),
                                               crawl_tasks.c.held_by == worker)
                     .values(held_by=None))


def release_unheld(conn: Connection, queued_before: float, now: float, count_only: bool = False) -> int:
    """Make pending and due now the rows queued before ``queued_before`` that no worker
    holds (their message was taken by a worker that died before it could hold them, at any
    stage); the caller knows no message waits in any stage's queue. ``count_only``: only
    count them."""
    which = (crawl_tasks.c.status == QUEUED, crawl_tasks.c.held_by.is_(None),
             crawl_tasks.c.queued_at < queued_before)
    if count_only:
        return int(conn.execute(select(func.count()).where(*which)).scalar_one())
    return conn.execute(update(crawl_tasks).where(*which).values(
        status=PENDING, next_run_at=now, queued_at=None, deadline_at=None,
        error="its message was taken by a worker that stopped before it began; sent again",
        updated_at=now,
    )).rowcount


def lease_rows(conn: Connection) -> list[Any]:
    """Every (worker, expires_at, updated_at), for tests and the console."""
    return list(conn.execute(select(worker_leases.c.worker, worker_leases.c.expires_at,
                                    worker_leases.c.updated_at).order_by(worker_leases.c.worker)))
