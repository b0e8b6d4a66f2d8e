"""The frontier scheduler: each tick claims due rows from crawl_tasks and publishes them.

It runs inside ``celery -A crawlcluster beat`` (``beat_scheduler`` in celeryconfig.py
names :class:`CrawlScheduler`) and, unchanged, inside the embedded crawl. One tick claims
a bounded batch per running project (highest priority first), marks the rows queued with
a deadline *before* publishing them, sends them in batches to the fetch queue (render rows
to the render queue), re-sends rows whose deadline passed (their message was lost), and
marks projects with nothing pending or queued as finished.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from celery import Celery
from celery.beat import Scheduler

from crawlcluster import frontier, settings
from crawlcluster.db import get_engine
from crawlcluster.errors import CrawlClusterError
from crawlcluster.lease import LeaderLease
from crawlcluster.messages import BatchPublisher, fetch_messages
from crawlcluster.messages import send as send_message
from crawlcluster.rendering import RenderHostMemory
from crawlcluster.urls import url_host
from crawlcluster.politeness import (
    ROBOTS_CALLBACK,
    ROBOTS_ERROR,
    ROBOTS_FETCHING,
    ROBOTS_UNKNOWN,
    ROBOTS_UNREACHABLE,
    HostSlot,
    RobotsCache,
    TokenBucket,
    upsert_host,
)
from crawlcluster.spider import Request

logger = logging.getLogger(__name__)


# how often a tick looks again when the only thing holding work back is a full host
FULL_HOST_POLL_SECONDS = 0.05
# timers, deletions, stale rows: looked at this often, not on every tick of a busy frontier
HOUSEKEEPING_SECONDS = 0.5
# Counting the queued rows reads each of them: done on every tick while few are in flight,
# and less often once many are (a second per QUEUED_ROWS_PER_SECOND rows: 10,000 in
# flight, every 0.25 s), never less often than QUEUED_RECOUNT_MAX_SECONDS.
QUEUED_ROWS_PER_SECOND = 40_000
QUEUED_RECOUNT_MAX_SECONDS = 0.5
# Between counts the scheduler's own figures only overestimate, so a count can only free
# what a limit holds back. While no limit held anything back (no full host, no host waiting
# for its delay, no project at its in-queue limit), counts are refreshed this seldom.
QUEUED_RECOUNT_IDLE_SECONDS = 5.0


# Claims whose UPDATE and commit the committing thread has not finished yet, at most: the
# tick goes on reading the next batch meanwhile (each holds a connection and its rows' locks).
MAX_CLAIMS_IN_HAND = 2
# Batches of messages waiting for the publishing thread, at most
MAX_SENDS_IN_HAND = 2
# Candidates a claim reads beyond its room, for rows it passes over (host full, robots.txt)
MIN_SPARE_CANDIDATES, MAX_SPARE_CANDIDATES = 32, 500


class LeaseLost(CrawlClusterError):
    """This scheduler is no longer the leader; its claim was rolled back."""


@dataclass
class Claim:
    """Rows chosen in an open transaction, to be marked queued, fenced, committed, then sent."""

    project: str
    conn: Any
    transaction: Any
    chosen: list[dict[str, Any]]  # locked pending rows, marked queued at commit
    queued_rows: list[dict[str, Any]]  # rows already queued in the transaction (robots.txt fetches)
    now: float
    committed: bool = False

    @property
    def size(self) -> int:
        return len(self.chosen) + len(self.queued_rows)


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
        database_url: str | None = None,
    ) -> None:
        self.app = app
        self.claim_batch_size = claim_batch_size
        self.max_queued_per_project = max_queued_per_project
        self.queued_deadline_seconds = queued_deadline_seconds
        self.fetch_batch_size = fetch_batch_size
        self.tick_seconds = tick_seconds
        self.database_url = database_url
        self.per_host_concurrency = settings.get("per_host_concurrency")
        self.per_host_delay_seconds = settings.get("per_host_delay_seconds")
        self.obey_robots = settings.get("obey_robots")
        self.robots = RobotsCache(settings.get("user_agent"))
        self.slots: dict[str, HostSlot] = {}
        self.buckets: dict[str, TokenBucket] = {}
        self._spare: dict[str, int] = {}  # per project: candidates to read beyond the room
        self.lease = LeaderLease(settings.get("leader_lease_seconds"))
        self.auto_pause_failures = settings.get("auto_pause_failures")
        self.trial_size = settings.get("auto_pause_trial_size")
        self._last_cleanup = 0.0
        self._last_housekeeping = 0.0
        self._in_flight: dict[str, int] = {}  # per host, as last counted
        self._queued: dict[str, int] = {}  # per project, as last counted plus claims since
        self._counted_at = 0.0
        self._counted_rows = 0
        self._held_back = True  # a limit held rows back since the last count
        self._broker = BatchPublisher(app)
        # one thread sends committed rows' messages while the next tick claims (which mostly
        # waits on Postgres); at most MAX_SENDS_IN_HAND batches are in its hands at a time
        self._publisher = ThreadPoolExecutor(1, thread_name_prefix="crawlcluster-publish")
        self._sending: deque[Future] = deque()  # the publishing thread's work, oldest first
        # on PostgreSQL another thread marks claimed rows queued and commits them while the
        # tick reads the next batch
        self._committer = ThreadPoolExecutor(1, thread_name_prefix="crawlcluster-commit")
        # claims handed to it, oldest first (their rows stay locked until it commits, so the
        # next tick's SKIP LOCKED read passes over them)
        self._claims_in_hand: deque[tuple[Future, Claim]] = deque()
        # (project, [(task name, rows)]) claimed this tick, sent when it ends
        self._outbox: list[tuple[str, list[tuple[str, list[dict[str, Any]]]]]] = []
        self.published_total = 0
        self.resent_total = 0

    @property
    def _engine(self) -> Any:
        return get_engine(self.database_url)

    @property
    def _pipelined(self) -> bool:
        """Whether claims are committed by the committing thread (not on SQLite, where a
        second open write transaction would only wait for the first)."""
        return self._engine.dialect.name == "postgresql"

    @classmethod
    def from_settings(cls, app: Celery) -> "Dispatcher":
        return cls(
            app,
            claim_batch_size=settings.get("claim_batch_size"),
            max_queued_per_project=settings.get("max_queued_per_project"),
            queued_deadline_seconds=settings.get("queued_deadline_seconds"),
            fetch_batch_size=settings.get("fetch_batch_size"),
            tick_seconds=settings.get("tick_seconds"),
        )

    def tick(self) -> float:
        """Claim one bounded batch and hand it over to be committed and sent; return the seconds
        until the next tick is worth running (0 when a full batch was claimed and more is
        probably due). On PostgreSQL another thread marks the rows queued and commits, so
        the next tick reads while this one writes; :meth:`flush` waits until everything
        claimed so far is committed and on the broker."""
        now = time.time()
        while self._claims_in_hand and self._claims_in_hand[0][0].done():
            self._claims_in_hand.popleft()[0].result()  # a claim that failed (LeaseLost) fails this tick
        with self._engine.connect() as conn:  # for the tick's bookkeeping; each claim has its own
            if self.lease.renew_due(now):
                # the leader's claims renew the lease in their own transactions (fence);
                # this is for a standby, and for a leader with nothing to claim
                with conn.begin():
                    if not self.lease.acquire_or_renew(conn, now):
                        return min(1.0, self.lease.ttl_seconds / 4)  # a standby: poll for the lease
            housekeeping = now - self._last_housekeeping >= HOUSEKEEPING_SECONDS
            if housekeeping:
                self._last_housekeeping = now
                self._housekeeping(conn, now)
            with conn.begin():
                running = frontier.running_projects(conn)
                since = now - self._counted_at
                if since >= min(QUEUED_RECOUNT_MAX_SECONDS, self._counted_rows / QUEUED_ROWS_PER_SECOND) and (
                        self._held_back or since >= QUEUED_RECOUNT_IDLE_SECONDS):
                    self._recount(conn, now)
            share = max(self.fetch_batch_size, self.claim_batch_size // max(1, len(running)))
            published = 0
            saturated = False
            waits = [self.tick_seconds]
            try:
                for project in running:
                    claimed, full, wait = self._claim_for(project, share, self._in_flight,
                                                          self._queued.get(project["name"], 0), now)
                    if claimed:
                        published += claimed
                        self._queued[project["name"]] = self._queued.get(project["name"], 0) + claimed
                    saturated = saturated or full
                    waits.append(wait)
                if housekeeping:
                    published += self.resend_stale(conn)
            finally:
                self._hand_over()  # what was claimed before a failure is sent all the same
        self.published_total += published
        if saturated:
            return 0.0
        return max(0.01, min(waits + ([0.05] if published else [])))

    def _fence(self, conn: Any) -> None:
        """Check and extend the lease in the caller's transaction, or roll it back."""
        if not self.lease.fence(conn):
            raise LeaseLost(f"the scheduler lease moved away from {self.lease.holder}")

    def _recount(self, conn: Any, now: float) -> None:
        """Rows in flight per host and queued per project, from the table. Between two
        counts the host slots add up what this scheduler sends, so they can only
        overestimate what is in flight: a limit may be under-used for a moment, never
        exceeded."""
        # claims still in the thread's hands may commit before or after the count's snapshot:
        # added on top, they are counted once or twice, never missed
        uncommitted = [claim for _, claim in self._claims_in_hand if not claim.committed]
        self._in_flight, self._queued = frontier.queued_counts(conn)
        for claim in uncommitted:
            for row in claim.chosen:
                self._in_flight[row["host"]] = self._in_flight.get(row["host"], 0) + 1
            self._queued[claim.project] = self._queued.get(claim.project, 0) + claim.size
        self._counted_at = now
        self._counted_rows = sum(self._queued.values())
        self._held_back = False
        for slot in self.slots.values():
            slot.observe(self._in_flight.get(slot.host, 0), now)

    def _claim_for(self, project: dict[str, Any], share: int, in_flight: dict[str, int],
                   queued: int, now: float) -> tuple[int, bool, float]:
        """Claim what ``project`` may send now (``queued`` of its rows are queued already);
        returns (rows claimed, whether the batch was full, seconds until a limit lets more
        through). The claim's transaction locks the chosen rows here; :meth:`_commit` marks
        them queued and commits, in the committing thread on PostgreSQL."""
        name = project["name"]
        options = project["settings"] or {}
        bucket = self.buckets.setdefault(name, TokenBucket(None, None))
        bucket.configure(project["rate"], project["burst"])
        limit = project["queue_limit"] or self.max_queued_per_project
        obey = options.get("obey_robots", self.obey_robots)
        wait = self.tick_seconds
        room = min(share, limit - queued)
        if self.auto_pause_failures and project["consecutive_failures"] >= self.auto_pause_failures:
            room = min(room, self.trial_size - queued)  # on trial after an auto-pause
        if room < share:
            self._held_back = True  # rows wait for queued ones to finish: the next count sees them go
        tokens = bucket.available()
        room = int(min(room, tokens)) if bucket.limited else room
        if room <= 0:
            if bucket.limited:
                wait = bucket.seconds_until(1)
            return 0, False, wait
        conn = self._engine.connect()  # the claim's own: the committing thread may finish it
        transaction = conn.begin()
        try:
            skip = {h for h, slot in self.slots.items() if not slot.can_take(now)}
            if skip:
                self._held_back = True  # a full host, or one in its delay
            if obey:
                skip |= self.robots.waiting_hosts(conn, now, self.queued_deadline_seconds)
            # a few more than the room, for the ones a host limit or robots.txt passes over
            spare = self._spare.get(name, MAX_SPARE_CANDIDATES)
            candidates = frontier.due_candidates(conn, name, room + min(room, spare), skip, now=now)
            if not candidates:
                finished = not frontier.has_open_tasks(conn, name) and frontier.mark_finished(conn, name, project["updated_at"])
                self._fence(conn)
                transaction.commit()
                if finished:
                    logger.info("project %s finished", name)
                    self._send("crawlcluster.finished", {"project": name})
                return 0, False, self._next_slot_wait(now)
            robots = self.robots.get(conn, {c["host"] for c in candidates}) if obey else {}
            # an unreachable host's rows are about to fail: read it afresh, since a user's
            # retry of its failed rows may have reset it a moment ago
            robots.update(self.robots.refresh(conn, {h for h, info in robots.items()
                                                     if info.status == ROBOTS_UNREACHABLE}))
            claim = Claim(name, conn, transaction, [], [], now)
            disallowed: list[str] = []
            unreachable: dict[str, list[str]] = {}  # per host whose robots.txt stayed unreachable
            robots_asked: set[str] = set()
            host_slots: dict[str, HostSlot] = {}  # resolved once per host in this claim
            examined = 0
            for examined, candidate in enumerate(candidates, 1):
                host = candidate["host"]
                if obey:
                    info = robots[host]
                    if info.status == ROBOTS_UNREACHABLE:
                        # its rows fail before anything else, even once its time is up (with
                        # robots_unreachable_seconds small, asking again first would postpone
                        # them for ever); after that time robots.txt is asked again, for later rows
                        unreachable.setdefault(host, []).append(candidate["task_id"])
                        if host not in robots_asked and info.needs_fetch(now, self.queued_deadline_seconds):
                            robots_asked.add(host)
                            claim.queued_rows.append(self._robots_row(conn, name, candidate, now))
                        continue
                    if host in robots_asked:
                        continue
                    if info.needs_fetch(now, self.queued_deadline_seconds):
                        robots_asked.add(host)
                        claim.queued_rows.append(self._robots_row(conn, name, candidate, now))
                        continue
                    if info.status in (ROBOTS_FETCHING, ROBOTS_ERROR, ROBOTS_UNKNOWN):
                        continue
                    if not self.robots.allows(info, candidate["url"]):
                        disallowed.append(candidate["task_id"])
                        continue
                slot = host_slots.get(host)
                if slot is None:
                    slot = host_slots[host] = self._slot(host, options, robots.get(host) if obey else None, in_flight)
                if not slot.can_take(now):
                    self._held_back = True
                    continue
                slot.take(now)
                claim.chosen.append(candidate)
                if len(claim.chosen) >= room:
                    break
            frontier.mark_disallowed(conn, disallowed, f"disallowed by robots.txt for User-agent {self.robots.user_agent!r}")
            for host, ids in unreachable.items():
                # RFC 9309: an unreachable robots.txt means nothing on the host is fetched
                frontier.mark_failed(conn, ids, "robots", robots[host].unreachable_reason(host), now=now)
            # every candidate is locked until the commit: read about twice as many spare ones
            # as were passed over this time (the next read skips locked rows, and pays for them)
            passed_over = examined - len(claim.chosen)
            self._spare[name] = max(MIN_SPARE_CANDIDATES, min(MAX_SPARE_CANDIDATES, 2 * passed_over))
        except BaseException:
            conn.close()  # rolls the claim back
            raise
        bucket.consume(len(claim.chosen))
        self._hand_over_claim(claim)
        return claim.size, len(claim.chosen) >= room, min(wait, self._next_slot_wait(now))

    def _hand_over_claim(self, claim: Claim) -> None:
        """On PostgreSQL the committing thread commits the claim (then the publishing thread
        sends it) while this thread reads the next one; on SQLite (one writer at a time) it
        is committed here."""
        if not self._pipelined:
            self.publish(claim.project, self._commit(claim))
            return
        try:
            while len(self._claims_in_hand) >= MAX_CLAIMS_IN_HAND:
                self._claims_in_hand.popleft()[0].result()
        except BaseException:
            claim.conn.close()  # an earlier claim failed (LeaseLost): roll this one back too
            raise
        self._claims_in_hand.append((self._committer.submit(self._commit_and_send, claim), claim))

    def _commit(self, claim: Claim) -> list[dict[str, Any]]:
        """Mark the claim's rows queued, check the lease and commit; the rows to send."""
        try:
            rows = frontier.mark_queued(claim.conn, claim.chosen, self.queued_deadline_seconds, now=claim.now)
            self._fence(claim.conn)  # last: the lease row stays locked only until the commit
            claim.transaction.commit()
            claim.committed = True
        finally:
            claim.conn.close()  # rolls back what was not committed
        return rows + claim.queued_rows

    def _commit_and_send(self, claim: Claim) -> None:
        rows = self._commit(claim)
        if rows:
            self._queue_send([(claim.project, self._by_task(claim.project, rows))])

    def _housekeeping(self, conn: Any, now: float) -> None:
        """Auto-paused projects back on trial, due @every timers, due deletions."""
        with conn.begin():
            self._fence(conn)
            for name in frontier.resume_auto_paused(conn, now):
                logger.warning("project %s resumes on trial after its auto-pause", name)
            timers = frontier.claim_due_timers(conn, now)
            if now - self._last_cleanup >= 5.0:
                self._last_cleanup = now
                for name in frontier.delete_due_projects(conn, 10_000, now):
                    logger.warning("project %s deleted", name)
        for project, timer in timers:  # reserved before sending: a failed send waits a whole interval
            self._send("crawlcluster.periodic", {"project": project, "timer": timer})

    def _send(self, task_name: str, message: dict[str, Any]) -> None:
        try:
            send_message(self.app, task_name, message)
        except Exception:  # noqa: BLE001 - logged; the next occasion sends again
            logger.exception("could not send %s %s", task_name, message)

    def _robots_row(self, conn: Any, project: str, candidate: dict[str, Any], now: float) -> dict[str, Any]:
        """Queue a fetch of the candidate host's robots.txt and hold the host until it is in."""
        scheme = candidate["url"].split("://", 1)[0]
        url = f"{scheme}://{candidate['host']}/robots.txt"
        request = Request(url, callback=ROBOTS_CALLBACK, retries=0, priority=10**6)
        row = frontier.task_row(project, url, request, spider=None, project_settings=None, depth=0, now=now)
        upsert_host(conn, candidate["host"], now, robots_status=ROBOTS_FETCHING)
        self.robots.mark_fetching(candidate["host"], now)
        return frontier.queue_row_now(conn, row, self.queued_deadline_seconds, now=now)

    def _slot(self, host: str, options: dict[str, Any], robots: Any, in_flight: dict[str, int]) -> HostSlot:
        overrides = (options.get("hosts") or {}).get(host, {})
        max_in_flight = int(overrides.get("per_host_concurrency", options.get("per_host_concurrency", self.per_host_concurrency)))
        delay = float(overrides.get("per_host_delay", options.get("per_host_delay", self.per_host_delay_seconds)))
        if robots is not None and robots.crawl_delay:
            delay = max(delay, float(robots.crawl_delay))
        slot = self.slots.get(host)
        if slot is None:
            slot = self.slots[host] = HostSlot(host, max_in_flight, delay, in_flight.get(host, 0))
        slot.max_in_flight, slot.delay_seconds = max_in_flight, delay
        return slot

    def _next_slot_wait(self, now: float) -> float:
        """Until a host may take its next request: its delay's end, or soon when a host is
        only full (its slots free as pages are parsed, at any moment)."""
        waits = [slot.next_allowed_at - now for slot in self.slots.values() if slot.next_allowed_at > now]
        if any(slot.delay_seconds == 0 and slot.in_flight >= slot.max_in_flight for slot in self.slots.values()):
            waits.append(FULL_HOST_POLL_SECONDS)
        return max(0.01, min(waits)) if waits else self.tick_seconds

    def resend_stale(self, conn: Any) -> int:
        with conn.begin():
            self._fence(conn)
            rows = frontier.reclaim_stale_tasks(conn, self.claim_batch_size, self.queued_deadline_seconds)
        by_project: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_project.setdefault(row["project"], []).append(row)
        for project, project_rows in by_project.items():
            logger.warning("re-sending %d rows of %s queued past their deadline", len(project_rows), project)
            self.publish(project, project_rows)
        self.resent_total += len(rows)
        return len(rows)

    def route(self, project: str, row: dict[str, Any]) -> str:
        """The task (and so the queue) a claimed row is sent to: render rows to the browser
        tier, the rest to fetch. A ``render="auto"`` row goes to render once its host is
        known to need a browser (remembered by the parse stage in render_hosts)."""
        fetch = row.get("fetch")
        render = fetch.get("render") if fetch else None
        if not render:
            return "crawlcluster.fetch"
        if render is True:
            return "crawlcluster.render"
        if render == "auto" and self._render_host_memory().needs_render(project, url_host(row["url"])):
            return "crawlcluster.render"
        return "crawlcluster.fetch"

    def _render_host_memory(self) -> RenderHostMemory:
        # created on first use: most dispatchers never see an "auto" row
        memory = getattr(self, "_render_hosts", None)
        if memory is None:
            memory = self._render_hosts = RenderHostMemory(get_engine(self.database_url))
        return memory

    def publish(self, project: str, rows: list[dict[str, Any]]) -> None:
        """Route committed queued rows to their stage; they are sent at the end of the tick."""
        if rows:
            self._outbox.append((project, self._by_task(project, rows)))

    def _by_task(self, project: str, rows: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
        by_task: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_task.setdefault(self.route(project, row), []).append(row)
        return list(by_task.items())

    def _hand_over(self) -> None:
        if self._outbox:
            outbox, self._outbox = self._outbox, []
            self._queue_send(outbox)

    def _queue_send(self, outbox: list[tuple[str, list[tuple[str, list[dict[str, Any]]]]]]) -> None:
        """Give committed rows to the publishing thread (from the tick or the committing
        thread), once fewer than MAX_SENDS_IN_HAND batches wait there."""
        while len(self._sending) >= MAX_SENDS_IN_HAND:
            try:
                oldest = self._sending.popleft()
            except IndexError:  # the other thread took it
                break
            oldest.result()
        self._sending.append(self._publisher.submit(self._send_outbox, outbox))

    def flush(self) -> None:
        """Wait until everything claimed so far is committed and its messages sent (or
        failed and logged); raises the first failure of a commit (LeaseLost, a database
        error), after waiting for the rest."""
        failure: BaseException | None = None
        while self._claims_in_hand:
            try:
                self._claims_in_hand.popleft()[0].result()
            except BaseException as exc:  # noqa: BLE001 - re-raised below, once all are done
                failure = failure or exc
        while self._sending:  # the commits above queued their sends before they finished
            self._sending.popleft().result()
        if failure is not None:
            raise failure

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._committer.shutdown(wait=True)
            self._publisher.shutdown(wait=True)

    def _send_outbox(self, outbox: list[tuple[str, list[tuple[str, list[dict[str, Any]]]]]]) -> None:
        """The publishing thread's work: one pipeline per project's messages."""
        for project, by_task in outbox:
            rows = sum(len(stage_rows) for _, stage_rows in by_task)
            messages = [(task_name, message) for task_name, stage_rows in by_task
                        for message in fetch_messages(project, stage_rows, self.fetch_batch_size)]
            try:
                self._broker.publish(messages)
            except Exception:  # noqa: BLE001 - the rows are queued with a deadline; they will be re-sent
                logger.exception("could not publish %d rows of %s; they will be re-sent after %ss",
                                 rows, project, self.queued_deadline_seconds)


class CrawlScheduler(Scheduler):
    """Celery beat scheduler that also dispatches the crawl frontier on every tick."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.dispatcher = Dispatcher.from_settings(self.app)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        beat_wait = super().tick(*args, **kwargs)
        try:
            wait = self.dispatcher.tick()
        except LeaseLost as exc:
            logger.warning("%s; standing by", exc)
            self.dispatcher.lease.token = None
            wait = 1.0
        except Exception:  # noqa: BLE001 - a database outage must not stop beat; try again
            logger.exception("frontier tick failed; retrying in %ss", self.dispatcher.tick_seconds)
            wait = self.dispatcher.tick_seconds
        return min(beat_wait, wait)

    def close(self) -> None:
        """At a clean shutdown, send what was claimed, then hand the lease over at once
        instead of after it expires."""
        try:
            self.dispatcher.close()
        except Exception:  # noqa: BLE001 - logged; unsent rows are re-sent after their deadline
            logger.exception("could not send the last claimed rows")
        try:
            with get_engine(self.dispatcher.database_url).begin() as conn:
                self.dispatcher.lease.release(conn)
        except Exception:  # noqa: BLE001 - shutting down; the lease expires by itself anyway
            logger.exception("could not release the scheduler lease")
        super().close()
