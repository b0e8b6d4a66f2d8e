"""The commit-and-publish pipeline: claims committed by one thread, their messages sent by another.

On PostgreSQL a committing thread marks a claim's rows queued, fences the lease and commits
while the tick reads the next claim (which mostly waits on Postgres); a publishing thread
then sends the committed rows to the broker in batches. On SQLite (one writer at a time) a
claim is committed in the tick's own thread. Rows are marked queued with a deadline
*before* they are published. A send that fails (the broker is down) moves their deadline
to :data:`UNSENT_RESEND_SECONDS` from then, so housekeeping sends them again within
seconds (not after ``queued_deadline_seconds``), and each failed batch is one log line.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from celery import Celery

from crawlcluster.database import claims
from crawlcluster.database import projects as lifecycle
from crawlcluster.db import get_engine
from crawlcluster.dispatch.claim import Claim
from crawlcluster.dispatch.lease import LeaderLease
from crawlcluster.dispatch.routing import Router
from crawlcluster.messages import claim_batch_size, fetch_messages, project_trust
from crawlcluster.publish import BatchPublisher
from crawlcluster.publish import send as send_message
from crawlcluster.stages import FETCH

logger = logging.getLogger(__name__)

# Claims whose UPDATE and commit the committing thread has not finished yet, at most: the
# tick goes on reading the next batch meanwhile (each holds a connection and its rows' locks).
MAX_CLAIMS_IN_HAND = 2
# Batches of messages waiting for the publishing thread, at most
MAX_SENDS_IN_HAND = 2

# Rows whose messages could not be published are sent again after this long (the rows
# stay queued, so they keep their host's slots and nothing else claims them meanwhile)
UNSENT_RESEND_SECONDS = 5.0

# (project, [(task name, rows)]): committed rows, routed, waiting to be sent
Outbox = list[tuple[str, list[tuple[str, list[dict[str, Any]]]]]]


def send_quietly(app: Celery, task_name: str, message: dict[str, Any]) -> None:
    """Send one control message (a project finished, a timer due); a failure is logged,
    since the next occasion sends again."""
    try:
        send_message(app, task_name, message)
    except Exception:  # noqa: BLE001 - logged; the next occasion sends again
        logger.exception("could not send %s %s", task_name, message)


class CommitPipeline:
    """Commits claims and publishes their rows; :meth:`flush` waits for both."""

    def __init__(self, app: Celery, lease: LeaderLease, router: Router, *, fetch_batch_size: int,
                 queued_deadline_seconds: float, database_url: str | None = None,
                 fetch_batch_max: int | None = None) -> None:
        self.lease = lease
        self.router = router
        self.fetch_batch_size = fetch_batch_size
        # URLs per fetch message for a large claim (messages.claim_batch_size); render keeps
        # fetch_batch_size, as a browser has only a few pages in flight
        self.fetch_batch_max = fetch_batch_max or fetch_batch_size
        self.queued_deadline_seconds = queued_deadline_seconds
        self.database_url = database_url
        self._broker = BatchPublisher(app)
        # one thread sends committed rows' messages while the next tick claims; at most
        # MAX_SENDS_IN_HAND batches are in its hands at a time
        self._publisher = ThreadPoolExecutor(1, thread_name_prefix="crawlcluster-publish")
        self._sending: deque[Future] = deque()  # the publishing thread's work, oldest first
        self._committer = ThreadPoolExecutor(1, thread_name_prefix="crawlcluster-commit")
        # claims handed to it, oldest first (their rows stay locked until it commits, so the
        # next tick's SKIP LOCKED read passes over them)
        self._claims_in_hand: deque[tuple[Future, Claim]] = deque()
        self._outbox: Outbox = []  # routed this tick, sent when it ends
        # per project: what its fetch messages let the address guard reach (messages.project_trust)
        self._trust: dict[str, list[str]] = {}

    def note_projects(self, projects: list[dict[str, Any]]) -> None:
        """Remember the trust of ``projects`` (rows of the projects table), read each tick."""
        for project in projects:
            self._trust[project["name"]] = project_trust(project["settings"])

    def _trust_of(self, project: str) -> list[str]:
        """The trust of ``project``: as last noted, or read (a row re-sent for a project that
        is not running)."""
        trust = self._trust.get(project)
        if trust is None:
            with get_engine(self.database_url).connect() as conn:
                row = lifecycle.project_row(conn, project)
            trust = self._trust[project] = project_trust(row["settings"] if row else None)
        return trust

    @property
    def threaded(self) -> bool:
        """Whether claims are committed by the committing thread (not on SQLite, where a
        second open write transaction would only wait for the first)."""
        return get_engine(self.database_url).dialect.name == "postgresql"

    def raise_failures(self) -> None:
        """Drop the claims the committing thread has finished; raise the first that failed
        (:class:`LeaseLost`, a database error)."""
        while self._claims_in_hand and self._claims_in_hand[0][0].done():
            self._claims_in_hand.popleft()[0].result()

    def uncommitted(self) -> list[Claim]:
        """Claims handed over and not committed yet (a count of the table may miss them)."""
        return [claim for _, claim in self._claims_in_hand if not claim.committed]

    def hand_over(self, claim: Claim) -> None:
        """On PostgreSQL the committing thread commits the claim (then the publishing thread
        sends it) while the caller reads the next one; on SQLite it is committed here and
        sent at :meth:`send_outbox`."""
        if not self.threaded:
            self.publish(claim.project, self.commit(claim))
            return
        try:
            while len(self._claims_in_hand) >= MAX_CLAIMS_IN_HAND:
                self._claims_in_hand.popleft()[0].result()
        except BaseException:
            claim.conn.close()  # an earlier claim failed (LeaseLost): roll this one back too
            raise
        self._claims_in_hand.append((self._committer.submit(self._commit_and_send, claim), claim))

    def commit(self, claim: Claim) -> list[dict[str, Any]]:
        """Mark the claim's rows queued, check the lease and commit; the rows to send."""
        try:
            rows = claims.mark_queued(claim.conn, claim.chosen, self.queued_deadline_seconds, now=claim.now)
            self.lease.fence_or_raise(claim.conn)  # last: the lease row stays locked only until the commit
            claim.transaction.commit()
            claim.committed = True
        finally:
            claim.conn.close()  # rolls back what was not committed
        return rows + claim.queued_rows

    def _commit_and_send(self, claim: Claim) -> None:
        rows = self.commit(claim)
        if rows:
            self._queue_send([(claim.project, self.router.by_task(claim.project, rows))])

    def publish(self, project: str, rows: list[dict[str, Any]]) -> None:
        """Route committed queued rows to their stage; they are sent at :meth:`send_outbox`."""
        if rows:
            self._outbox.append((project, self.router.by_task(project, rows)))

    def send_outbox(self) -> None:
        """Hand what :meth:`publish` collected (at the end of a tick) to the publishing thread."""
        if self._outbox:
            outbox, self._outbox = self._outbox, []
            self._queue_send(outbox)

    def _queue_send(self, outbox: Outbox) -> None:
        """Give committed rows to the publishing thread (from the tick or the committing
        thread), once fewer than MAX_SENDS_IN_HAND batches wait there."""
        while len(self._sending) >= MAX_SENDS_IN_HAND:
            try:
                oldest = self._sending.popleft()
            except IndexError:  # the other thread took it
                break
            oldest.result()
        self._sending.append(self._publisher.submit(self._send, outbox))

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

    def _send(self, outbox: Outbox) -> None:
        """The publishing thread's work: one pipeline per project's messages."""
        for project, by_task in outbox:
            try:
                trust = self._trust_of(project)
                messages = [(task_name, message) for task_name, stage_rows in by_task
                            for message in fetch_messages(project, stage_rows,
                                                          self._batch_size(task_name, stage_rows), trust)]
                self._broker.publish(messages)
            except Exception as exc:  # noqa: BLE001 - the rows are queued; they are sent again soon
                self._resend_soon(project,
                                  [row["task_id"] for _, stage_rows in by_task for row in stage_rows],
                                  f"{type(exc).__name__}: {exc}")

    def _batch_size(self, task_name: str, rows: list[dict[str, Any]]) -> int:
        """URLs per message for ``rows`` going to ``task_name``."""
        if task_name != FETCH.task:
            return self.fetch_batch_size
        return claim_batch_size(len(rows), self.fetch_batch_size, self.fetch_batch_max)

    def _resend_soon(self, project: str, ids: list[str], why: str) -> None:
        """Rows whose messages did not reach the broker: sent again in UNSENT_RESEND_SECONDS
        (by housekeeping), or, when the database cannot be told either, at their deadline."""
        first_line = why.splitlines()[0] if why else why
        try:
            with get_engine(self.database_url).begin() as conn:
                claims.resend_soon(conn, ids, time.time() + UNSENT_RESEND_SECONDS)
        except Exception as exc:  # noqa: BLE001 - the rows keep their deadline
            logger.warning("could not publish %d rows of %s (%s); they are sent again after their deadline "
                           "(%ss; the database is unreachable too: %s)", len(ids), project, first_line,
                           self.queued_deadline_seconds, type(exc).__name__)
            return
        logger.warning("could not publish %d rows of %s (%s); they are sent again in %.0fs",
                       len(ids), project, first_line, UNSENT_RESEND_SECONDS)
