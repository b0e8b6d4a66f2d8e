"""The dispatcher: each tick claims due rows from crawl_tasks and hands them on to be sent.

One tick claims a bounded batch per running project (highest priority first) within the
project's admission limits, the host slots and robots.txt; the claim's rows are marked
queued with a deadline *before* they are published (fetch queue, render rows to the render
queue); every so often housekeeping re-sends rows whose deadline passed (their message was
lost); a project with nothing pending or queued is marked finished. The parts it is handed
live beside it in :mod:`crawlcluster.dispatch`, and none of them knows the dispatcher.
"""

from __future__ import annotations

import logging
import time
from functools import partial
from typing import Any

from celery import Celery

from crawlcluster.database import claims as claim_rows
from crawlcluster.database import projects as lifecycle
from crawlcluster.database.counts import has_open_tasks
from crawlcluster.database.wakeup import WorkListener
from crawlcluster.db import get_engine
from crawlcluster.dispatch.broker_watch import BrokerWatch, resend_after_restart
from crawlcluster.dispatch.claim import Claim, ClaimReader
from crawlcluster.dispatch.housekeeping import Housekeeping, InFlightCounts, stage_queues_idle
from crawlcluster.dispatch.lease import LeaderLease
from crawlcluster.dispatch.limits import FULL_HOST_POLL_SECONDS, HostSlots, ProjectAdmission
from crawlcluster.dispatch.pipeline import CommitPipeline, send_quietly
from crawlcluster.dispatch.robots import RobotsCache
from crawlcluster.dispatch.robots_gate import RobotsGate
from crawlcluster.dispatch.routing import Router
from crawlcluster.settings import Settings
from crawlcluster.stages import FINISHED

logger = logging.getLogger(__name__)

# Least pause between two ticks of a leader woken by work notices: a busy crawl sends them
# continuously (a notice per parse and store message), and a tick per notice spent more CPU
# on claims of a row or two than it won (at 10 ms: about 40% more CPU per page in all, Redis
# and Postgres counted, on the small bench site). As long as a full host's poll, a busy crawl
# ticks as often as before; notices cut short the longer waits (an idle second, a retry).
WAKE_MIN_GAP_SECONDS = FULL_HOST_POLL_SECONDS


class Dispatcher:
    """Moves due rows from the task table to the broker, one bounded tick at a time."""

    def __init__(
        self,
        app: Celery,
        *,
        claim_batch_size: int,
        max_queued_per_project: int,
        queued_deadline_seconds: float,
        fetch_batch_size: int,
        tick_seconds: float,
        obey_robots: bool,
        leader_lease_seconds: float,
        per_host_concurrency: int,
        per_host_delay_seconds: float,
        auto_pause_failures: int,
        auto_pause_trial_size: int,
        user_agent: str,
        database_url: str | None = None,
        max_dispatches: int = 5,
        broker_url: str = "",
        worker_lease_seconds: float = 30.0,
        fetch_batch_max: int | None = None,
        per_host_refill_fraction: float = 0.0,
    ) -> None:
        self.app = app
        self.claim_batch_size = claim_batch_size
        self.fetch_batch_size = fetch_batch_size
        self.tick_seconds = tick_seconds
        self.database_url = database_url
        self.obey_robots = obey_robots
        self.lease = LeaderLease(leader_lease_seconds)
        self.slots = HostSlots(per_host_concurrency, per_host_delay_seconds, per_host_refill_fraction,
                               fetch_batch_size)
        self.admission = ProjectAdmission(max_queued_per_project, auto_pause_failures, auto_pause_trial_size)
        self.robots = RobotsGate(RobotsCache(user_agent), queued_deadline_seconds)
        self.claims = ClaimReader(self.slots, self.robots)
        self.counts = InFlightCounts()
        self.pipeline = CommitPipeline(app, self.lease, Router(database_url),
                                       fetch_batch_size=fetch_batch_size,
                                       fetch_batch_max=fetch_batch_max or fetch_batch_size,
                                       queued_deadline_seconds=queued_deadline_seconds,
                                       database_url=database_url)
        self.housekeeping = Housekeeping(self.lease, partial(send_quietly, app),
                                         claim_batch_size=claim_batch_size,
                                         queued_deadline_seconds=queued_deadline_seconds,
                                         max_dispatches=max_dispatches,
                                         worker_lease_seconds=worker_lease_seconds,
                                         stage_queues_idle=partial(stage_queues_idle, app))
        self.broker_watch = BrokerWatch(broker_url)  # watched on Redis only
        self._watching_under: int | None = None  # the lease token the watch last started from the stored id
        self.published_total = 0
        self._listener: WorkListener | None = None  # work notices (Postgres), opened at the first pause

    @classmethod
    def from_settings(cls, app: Celery, s: Settings, *, database_url: str | None = None) -> Dispatcher:
        """The dispatcher ``s`` describes (beat and the embedded crawl pass the process's
        settings, a test its own ``dataclasses.replace()`` of them); ``database_url``
        None means the engine registry's default, the database_url setting."""
        return cls(
            app,
            claim_batch_size=s.claim_batch_size,
            max_queued_per_project=s.max_queued_per_project,
            queued_deadline_seconds=s.queued_deadline_seconds,
            fetch_batch_size=s.fetch_batch_size,
            fetch_batch_max=s.fetch_batch_max,
            tick_seconds=s.tick_seconds,
            obey_robots=s.obey_robots,
            leader_lease_seconds=s.leader_lease_seconds,
            per_host_concurrency=s.per_host_concurrency,
            per_host_delay_seconds=s.per_host_delay_seconds,
            per_host_refill_fraction=s.per_host_refill_fraction,
            auto_pause_failures=s.auto_pause_failures,
            auto_pause_trial_size=s.auto_pause_trial_size,
            user_agent=s.user_agent,
            database_url=database_url,
            max_dispatches=s.max_dispatches,
            broker_url=s.broker_url,
            worker_lease_seconds=s.worker_lease_seconds,
        )

    @property
    def per_host_concurrency(self) -> int:
        """Requests in flight per host, cluster-wide, unless a project's settings say otherwise."""
        return self.slots.concurrency

    @per_host_concurrency.setter
    def per_host_concurrency(self, value: int) -> None:
        self.slots.concurrency = value

    def tick(self) -> float:
        """Claim one bounded batch and hand it over to be committed and sent; return the seconds
        until the next tick is worth running (0 when a full batch was claimed and more is
        probably due). On PostgreSQL another thread marks the rows queued and commits, so
        the next tick reads while this one writes; :meth:`flush` waits until everything
        claimed so far is committed and on the broker."""
        now = time.time()
        self.pipeline.raise_failures()  # a claim that failed (LeaseLost) fails this tick
        # a connection for the tick's bookkeeping; each claim has its own
        with get_engine(self.database_url).connect() as conn:
            if self.lease.renew_due(now):
                # the leader's claims renew the lease in their own transactions (fence);
                # this is for a standby, and for a leader with nothing to claim
                with conn.begin():
                    if not self.lease.acquire_or_renew(conn, now):
                        return min(1.0, self.lease.ttl_seconds / 4)  # a standby: poll for the lease
            if self.broker_watch.due(now) and self._resend_after_broker_restart(conn, now):
                self.housekeeping.last_run_at = 0.0  # send them again in this tick
            housekeeping = self.housekeeping.due(now)
            if housekeeping:
                self.housekeeping.run(conn, now)
            with conn.begin():
                running = lifecycle.running_projects(conn)
                self.pipeline.note_projects(running)
                if self.counts.due(now):
                    self.counts.recount(conn, now, self.pipeline.uncommitted())
                    self.slots.observe(self.counts.in_flight, now)
            share = max(self.fetch_batch_size, self.claim_batch_size // max(1, len(running)))
            published, saturated, waits = 0, False, [self.tick_seconds]
            try:
                for project in running:
                    claimed, full, wait = self._claim_for(project, share, now)
                    if claimed:
                        published += claimed
                        self.counts.add_claimed(project["name"], claimed)
                    saturated = saturated or full
                    waits.append(wait)
                if housekeeping:
                    published += self.housekeeping.resend_stale(conn, self.pipeline.publish)
            finally:
                self.pipeline.send_outbox()  # what was claimed before a failure is sent all the same
        self.published_total += published
        if saturated:
            return 0.0
        return max(0.01, min(waits + ([0.05] if published else [])))

    def _resend_after_broker_restart(self, conn: Any, now: float) -> int:
        """When the broker restarted since the run id stored in the lease row (seen by this
        leader or a former one), every row queued before now lost its message (Redis without
        its data): make them stale, so housekeeping sends them again at once; how many."""
        if self.lease.token != self._watching_under:  # leading anew: start from the stored run id
            with conn.begin():
                self.broker_watch.start_from(self.lease.stored_broker_run_id(conn))
            self._watching_under = self.lease.token

        def record(run_id: str, before: float | None) -> int:
            if before is not None:
                self.pipeline.flush()  # what was claimed before now is on the broker, or failed to get there
            with conn.begin():
                self.lease.store_broker_run_id(conn, run_id)
                return 0 if before is None else claim_rows.resend_queued_before(conn, before)

        return resend_after_restart(self.broker_watch, now, record)

    def _claim_for(self, project: dict[str, Any], share: int, now: float) -> tuple[int, bool, float]:
        """Claim what ``project`` may send now; returns (rows claimed, whether the batch was
        full, seconds until a limit lets more through). The claim's transaction locks the
        chosen rows here; the pipeline marks them queued and commits them."""
        name = project["name"]
        room = self.admission.room(project, share, self.counts.queued.get(name, 0))
        if room.held_back:
            self.counts.hold_back()
        if room.rows <= 0:
            return 0, False, self.tick_seconds if room.wait is None else room.wait
        conn = get_engine(self.database_url).connect()  # the claim's own: the committing thread may finish it
        try:
            obey = (project["settings"] or {}).get("obey_robots", self.obey_robots)
            claim = self.claims.read(conn, conn.begin(), project, room.rows, obey, self.counts.in_flight, now)
            if claim.held_back:
                self.counts.hold_back()
            due_at = None if claim.found else self._finish_if_done(claim, project)
        except BaseException:
            conn.close()  # rolls the claim back
            raise
        next_wait = self.slots.next_wait(now, self.tick_seconds)
        if not claim.found:
            if due_at is not None and due_at > now:  # a retry due before the next poll: wake for it
                next_wait = min(next_wait, due_at - now)
            return 0, False, next_wait
        self.admission.consume(name, len(claim.chosen))
        self.pipeline.hand_over(claim)
        return claim.size, len(claim.chosen) >= room.rows, min(self.tick_seconds, next_wait)

    def _finish_if_done(self, claim: Claim, project: dict[str, Any]) -> float | None:
        """Mark ``project`` finished when it has nothing pending or queued; commit the claim.
        Returns when its next pending row is due (None: it has none)."""
        name, conn = project["name"], claim.conn
        still_open = has_open_tasks(conn, name)
        finished = not still_open and lifecycle.finish(conn, name, project["updated_at"])
        due_at = claim_rows.next_due_at(conn, name) if still_open else None
        self.lease.fence_or_raise(conn)
        claim.transaction.commit()
        conn.close()
        if finished:
            logger.info("project %s finished", name)
            send_quietly(self.app, FINISHED.task, {"project": name})
        return due_at

    def pause(self, seconds: float) -> float:
        """Between two ticks: wait up to ``seconds`` for a work notice (rows added or
        ended; :mod:`crawlcluster.database.wakeup`); returns what
        the caller still sleeps before the next tick, at least WAKE_MIN_GAP_SECONDS. A standby,
        SQLite and a short wait sleep as before (all of ``seconds`` is returned)."""
        if seconds <= WAKE_MIN_GAP_SECONDS or not self.lease.is_leader:
            return seconds
        if self._listener is None:
            self._listener = WorkListener(get_engine(self.database_url))
        if not self._listener.enabled:
            return seconds
        self._listener.wait(seconds - WAKE_MIN_GAP_SECONDS)
        return WAKE_MIN_GAP_SECONDS

    def flush(self) -> None:
        """Wait until everything claimed so far is committed and its messages sent (or
        failed and logged); raises the first failure of a commit (LeaseLost, a database
        error), after waiting for the rest."""
        self.pipeline.flush()

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
        self.pipeline.close()
