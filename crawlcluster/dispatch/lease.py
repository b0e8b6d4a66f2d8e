"""The beat leader lease: of several `celery -A crawlcluster beat` processes, one dispatches.

The lease is a row in Postgres (``scheduler_lease``, read and written by
:mod:`crawlcluster.database.lease`) with a holder, an expiry and a fencing
token that grows at every change of leader. The leader renews it every tick; a standby
takes it over once it has expired. Every claim transaction of the leader first re-checks
and extends the lease *in the same transaction* (:meth:`LeaderLease.fence`), holding the
lease row's lock until it commits, so a deposed leader can never claim a row: its fence
fails and its transaction rolls back.

The row is also the scheduler's heartbeat: the leader writes ``updated_at`` at least every
:data:`HEARTBEAT_SECONDS` while it ticks, so :func:`scheduler_health` (``crawlcluster
status``, ``Crawl.wait``) can say "scheduler not seen for 60 s" long before a long lease
would expire.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection

from crawlcluster.database import lease as lease_rows
from crawlcluster.errors import CrawlClusterError
from crawlcluster.stats import duration

logger = logging.getLogger(__name__)


# The leader renews its lease after a quarter of its ttl, and at least this often: one
# UPDATE of one row, the heartbeat that tells a live scheduler from a dead one.
HEARTBEAT_SECONDS = 2.0
# A lease row not written for this many heartbeats (and never less than SILENT_MIN_SECONDS)
# belongs to a scheduler that has stopped ticking, whatever its expiry says.
SILENT_AFTER_HEARTBEATS = 5
SILENT_MIN_SECONDS = 10.0


def renew_interval(ttl_seconds: float) -> float:
    """Seconds between two renewals of a lease of ``ttl_seconds`` by a ticking leader."""
    return max(0.0, min(ttl_seconds / 4, HEARTBEAT_SECONDS))


class LeaseLost(CrawlClusterError):
    """This scheduler is no longer the leader; its claim was rolled back."""


class LeaderLease:
    def __init__(self, ttl_seconds: float, name: str = "beat", holder: str | None = None) -> None:
        self.ttl_seconds = ttl_seconds
        self.name = name
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.token: int | None = None
        self.renewed_at = 0.0  # when this process last extended the lease (time.time())

    def __repr__(self) -> str:
        return f"<LeaderLease {self.name} holder={self.holder} token={self.token}>"

    @property
    def is_leader(self) -> bool:
        return self.token is not None

    def renew_due(self, now: float) -> bool:
        """Whether this tick should take or renew the lease (claims renew it too, in their
        own transactions); often enough that the row's ``updated_at`` is a heartbeat."""
        return not self.is_leader or now - self.renewed_at >= renew_interval(self.ttl_seconds)

    def acquire_or_renew(self, conn: Connection, now: float | None = None) -> bool:
        """Renew the lease if we hold it, take it if it expired; True when we lead."""
        now = time.time() if now is None else now
        if self.token is not None and self.fence(conn, now):
            return True
        if self.token is not None:
            logger.warning("lost the scheduler lease (token %s); standing by", self.token)
            self.token = None
        token = lease_rows.take(conn, self.name, self.holder, now + self.ttl_seconds, now)
        if token is not None:
            self.token = token
            self.renewed_at = now
            logger.info("took the scheduler lease as %s (fencing token %s)", self.holder, self.token)
            return True
        return False

    def fence(self, conn: Connection, now: float | None = None) -> bool:
        """Check and extend our lease inside the caller's transaction; False if another
        scheduler holds it now (the caller must then roll back)."""
        if self.token is None:
            return False
        now = time.time() if now is None else now
        if lease_rows.extend(conn, self.name, self.holder, self.token, now + self.ttl_seconds, now):
            self.renewed_at = now
            return True
        return False

    def fence_or_raise(self, conn: Connection) -> None:
        """:meth:`fence`, raising :class:`LeaseLost` when another scheduler leads, so the
        caller's transaction rolls back instead of committing a deposed leader's work."""
        if not self.fence(conn):
            raise LeaseLost(f"the scheduler lease moved away from {self.holder}")

    def stored_broker_run_id(self, conn: Connection) -> str | None:
        """The broker run id the last leader stored in the lease row (None: never stored)."""
        return lease_rows.broker_run_id(conn, self.name)

    def store_broker_run_id(self, conn: Connection, run_id: str) -> None:
        """Store the broker run id this leader saw, inside the caller's transaction (which
        this fences: :class:`LeaseLost` when another scheduler leads)."""
        if not self.fence(conn) or self.token is None:
            raise LeaseLost(f"the scheduler lease moved away from {self.holder}")
        lease_rows.store_broker_run_id(conn, self.name, self.holder, self.token, run_id)

    def release(self, conn: Connection) -> None:
        """Give the lease up at a clean shutdown so a standby takes over at once."""
        if self.token is None:
            return
        lease_rows.give_up(conn, self.name, self.holder, self.token)
        self.token = None


@dataclass(frozen=True)
class SchedulerHealth:
    """What the lease row says about the dispatching scheduler (beat, or an embedded crawl)."""

    holder: str | None  # host:pid:nonce of the last leader; None when no scheduler ever ran
    last_seen_at: float | None  # when the leader last wrote its lease (unix time)
    seconds_since_seen: float | None
    alive: bool

    @property
    def message(self) -> str | None:
        """``None`` when a scheduler is alive, else a sentence a user can act on."""
        if self.alive:
            return None
        if self.holder is None or self.seconds_since_seen is None:
            return "no scheduler has ever run (start `celery -A crawlcluster beat`)"
        return f"scheduler not seen for {duration(self.seconds_since_seen)}"

    def as_dict(self) -> dict[str, Any]:
        return {"holder": self.holder, "last_seen_at": self.last_seen_at,
                "seconds_since_seen": self.seconds_since_seen, "alive": self.alive, "message": self.message}


def scheduler_health(conn: Connection, name: str = "beat", now: float | None = None) -> SchedulerHealth:
    """Read the lease row (one primary-key lookup): who leads, and when it last ticked. A
    leader is alive while its lease has not expired and it wrote the row within
    SILENT_AFTER_HEARTBEATS of its heartbeats."""
    now = time.time() if now is None else now
    row = lease_rows.lease_row(conn, name)
    if row is None:
        return SchedulerHealth(None, None, None, False)
    age = max(0.0, now - row.updated_at)
    ttl = row.expires_at - row.updated_at  # both written by every renewal; 0 or less once released
    silent_after = max(SILENT_MIN_SECONDS, SILENT_AFTER_HEARTBEATS * renew_interval(max(ttl, 0.0)))
    alive = row.expires_at > now and age <= silent_after
    return SchedulerHealth(row.holder, row.updated_at, round(age, 1), alive)
