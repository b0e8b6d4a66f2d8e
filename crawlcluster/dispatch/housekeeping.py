"""Housekeeping between claims, and the policy for recounting the rows in flight.

:class:`Housekeeping` puts auto-paused projects back on trial, reserves due ``@every``
timers, folds the row counters' deltas (:mod:`crawlcluster.database.counters`), deletes
projects whose deletion is due, makes the rows of workers whose lease expired due again (the
worker died or froze) and re-sends rows queued past their deadline (their message was lost).
:class:`InFlightCounts` holds the rows in flight per host and queued per project, and says
when they are worth counting again.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Iterable

from sqlalchemy.engine import Connection

from crawlcluster.database import claims, counters, timers, worker_leases
from crawlcluster.database import projects as lifecycle
from crawlcluster.dispatch.claim import Claim
from crawlcluster.dispatch.lease import LeaderLease
from crawlcluster.stages import PERIODIC

logger = logging.getLogger(__name__)

# timers, deletions, stale rows: looked at this often, not on every tick of a busy frontier
HOUSEKEEPING_SECONDS = 0.5
# due project deletions: looked for this often
CLEANUP_SECONDS = 5.0
# Counting the queued rows reads each of them: done on every tick while few are in flight,
# and less often once many are (a second per QUEUED_ROWS_PER_SECOND rows: 10,000 in
# flight, every 0.25 s), never less often than QUEUED_RECOUNT_MAX_SECONDS.
QUEUED_ROWS_PER_SECOND = 40_000
QUEUED_RECOUNT_MAX_SECONDS = 0.5
# Between counts the scheduler's own figures only overestimate, so a count can only free
# what a limit holds back. While no limit held anything back (no full host, no host waiting
# for its delay, no project at its in-queue limit), counts are refreshed this seldom.
QUEUED_RECOUNT_IDLE_SECONDS = 5.0


class InFlightCounts:
    """Rows in flight per host and queued per project, as last counted plus claims since.
    Between two counts the figures only add up what the dispatcher claimed, so they can only
    overestimate what is in flight: a limit may be under-used for a moment, never exceeded."""

    def __init__(self) -> None:
        self.in_flight: dict[str, int] = {}  # per host
        self.queued: dict[str, int] = {}  # per project
        self.counted_at = 0.0
        self.counted_rows = 0
        self.held_back = True  # a limit held rows back since the last count

    def hold_back(self) -> None:
        """A limit held rows back: the next count may free them."""
        self.held_back = True

    def recount_next_tick(self) -> None:
        """Count at the next tick, whatever the policy says (as if a limit held rows back
        long ago)."""
        self.counted_at, self.held_back = 0.0, True

    def due(self, now: float) -> bool:
        """Whether a count is worth its cost now."""
        since = now - self.counted_at
        return since >= min(QUEUED_RECOUNT_MAX_SECONDS, self.counted_rows / QUEUED_ROWS_PER_SECOND) and (
            self.held_back or since >= QUEUED_RECOUNT_IDLE_SECONDS)

    def recount(self, conn: Connection, now: float, uncommitted: Iterable[Claim]) -> None:
        """Count from the table; ``uncommitted`` claims may commit before or after the count's
        snapshot: added on top, they are counted once or twice, never missed."""
        uncommitted = list(uncommitted)
        self.in_flight, self.queued = claims.queued_counts(conn)
        for claim in uncommitted:
            for row in claim.chosen:
                self.in_flight[row["host"]] = self.in_flight.get(row["host"], 0) + 1
            self.queued[claim.project] = self.queued.get(claim.project, 0) + claim.size
        self.counted_at = now
        self.counted_rows = sum(self.queued.values())
        self.held_back = False

    def add_claimed(self, project: str, rows: int) -> None:
        self.queued[project] = self.queued.get(project, 0) + rows


def stage_queues_idle(app: Any) -> bool:
    """Whether the broker's stage queues (fetch, render, parse, store) hold no message (a
    queue not declared yet holds none)."""
    from crawlcluster.stages import QUEUES

    with app.connection_for_read() as connection:
        connection.ensure_connection(max_retries=1)  # a broker away raises at once, never blocks beat
        channel = connection.default_channel
        for queue in QUEUES:
            try:
                if channel.queue_declare(queue=queue, passive=True).message_count:
                    return False
            except Exception:  # noqa: BLE001 - a queue never declared holds nothing
                continue
    return True


class Housekeeping:
    """The dispatcher's chores, run every HOUSEKEEPING_SECONDS in the leader's transactions."""

    def __init__(self, lease: LeaderLease, send: Callable[[str, dict[str, Any]], None], *,
                 claim_batch_size: int, queued_deadline_seconds: float, max_dispatches: int = 5,
                 worker_lease_seconds: float = 30.0,
                 stage_queues_idle: Callable[[], bool] | None = None) -> None:
        self.lease = lease
        self.send = send
        self.claim_batch_size = claim_batch_size
        self.queued_deadline_seconds = queued_deadline_seconds
        self.max_dispatches = max_dispatches
        self.last_run_at = 0.0  # set it to now to skip the chores until HOUSEKEEPING_SECONDS pass
        self._last_cleanup = 0.0
        self.resent_total = 0
        self.worker_lease_seconds = worker_lease_seconds
        # whether no message waits in the fetch and render queues (None: not known)
        self.stage_queues_idle = stage_queues_idle
        self._last_unheld_check = 0.0

    def due(self, now: float) -> bool:
        """Whether this tick does the chores (and so, from now, the next one waits)."""
        if now - self.last_run_at < HOUSEKEEPING_SECONDS:
            return False
        self.last_run_at = now
        return True

    def run(self, conn: Connection, now: float) -> None:
        """Auto-paused projects back on trial, due @every timers, the row counters' pending
        deltas folded into their totals, due deletions."""
        with conn.begin():
            self.lease.fence_or_raise(conn)
            for name in lifecycle.resume_auto_paused(conn, now):
                logger.warning("project %s resumes on trial after its auto-pause", name)
            due_timers = timers.claim_due_timers(conn, now)
            counters.fold(conn)
            if now - self._last_cleanup >= CLEANUP_SECONDS:
                self._last_cleanup = now
                deleted = lifecycle.delete_due_projects(conn, 10_000, now)
                for name in deleted:
                    logger.warning("project %s deleted", name)
                counters.forget(conn, list(deleted))
        for project, timer in due_timers:  # reserved before sending: a failed send waits a whole interval
            self.send(PERIODIC.task, {"project": project, "timer": timer})

    def _release_unheld(self, conn: Connection, now: float) -> None:
        """Rows sent a lease ago that no worker holds while nothing waits in any stage queue:
        a worker took their message and died before it could hold them, at any stage (each
        stage lets its rows go when it sends them on; Redis keeps such a message
        unacknowledged for its visibility timeout, an hour)."""
        if self.stage_queues_idle is None or now - self._last_unheld_check < self.worker_lease_seconds / 3:
            return
        self._last_unheld_check = now
        before = now - self.worker_lease_seconds
        if not worker_leases.release_unheld(conn, before, now, count_only=True):
            return
        try:
            idle = self.stage_queues_idle()
        except Exception:  # noqa: BLE001 - the broker away: the queued deadline still bounds them
            logger.warning("could not read the stage queues' length", exc_info=True)
            return
        if idle and (count := worker_leases.release_unheld(conn, before, now)):
            logger.warning("%d rows sent over %gs ago that no worker holds, with nothing waiting in the "
                           "stage queues, are due again", count, self.worker_lease_seconds)

    def resend_stale(self, conn: Connection, publish: Callable[[str, list[dict[str, Any]]], None]) -> int:
        """Make the queued rows of workers whose lease expired pending and due now (the claims
        that follow send them again, within their hosts' limits), and hand rows queued past
        their deadline (their message was lost before any worker took it) to ``publish``
        again, per project; the number of rows re-sent. Rows sent ``max_dispatches`` times
        without an outcome end failed instead."""
        with conn.begin():
            self.lease.fence_or_raise(conn)
            for worker, count in worker_leases.release_expired(conn, time.time()).items():
                if count:
                    logger.warning("%d rows held by worker %s, whose lease expired, are due again", count,
                                   worker)
            self._release_unheld(conn, time.time())
            failed = claims.fail_over_dispatched(conn, self.claim_batch_size, self.max_dispatches)
            rows = claims.reclaim_stale_tasks(conn, self.claim_batch_size, self.queued_deadline_seconds,
                                              max_dispatches=self.max_dispatches)
        if failed:
            logger.warning("%d rows failed: sent to the workers %d times without an outcome (max_dispatches)",
                           failed, self.max_dispatches)
        by_project: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_project.setdefault(row["project"], []).append(row)
        for project, project_rows in by_project.items():
            logger.warning("re-sending %d rows of %s queued past their deadline", len(project_rows), project)
            publish(project, project_rows)
        self.resent_total += len(rows)
        return len(rows)
