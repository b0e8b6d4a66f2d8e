"""The beat leader lease: of several `celery -A crawlcluster beat` processes, one dispatches.

The lease is a row in Postgres (``scheduler_lease``) with a holder, an expiry and a fencing
token that grows at every change of leader. The leader renews it every tick; a standby
takes it over once it has expired. Every claim transaction of the leader first re-checks
and extends the lease *in the same transaction* (:meth:`LeaderLease.fence`), holding the
lease row's lock until it commits, so a deposed leader can never claim a row: its fence
fails and its transaction rolls back.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid

from sqlalchemy import update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from crawlcluster.schema import scheduler_lease

logger = logging.getLogger(__name__)


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

    def acquire_or_renew(self, conn: Connection, now: float | None = None) -> bool:
        """Renew the lease if we hold it, take it if it expired; True when we lead."""
        now = time.time() if now is None else now
        if self.token is not None and self.fence(conn, now):
            return True
        if self.token is not None:
            logger.warning("lost the scheduler lease (token %s); standing by", self.token)
            self.token = None
        insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(scheduler_lease)
        stmt = insert.values(name=self.name, holder=self.holder, token=1, expires_at=now + self.ttl_seconds,
                             updated_at=now)
        stmt = stmt.on_conflict_do_update(
            index_elements=["name"],
            set_={"holder": self.holder, "token": scheduler_lease.c.token + 1,
                  "expires_at": now + self.ttl_seconds, "updated_at": now},
            where=scheduler_lease.c.expires_at < now,
        ).returning(scheduler_lease.c.token)
        token = conn.execute(stmt).scalar()
        if token is not None:
            self.token = int(token)
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
        result = conn.execute(
            update(scheduler_lease)
            .where(scheduler_lease.c.name == self.name, scheduler_lease.c.holder == self.holder,
                   scheduler_lease.c.token == self.token)
            .values(expires_at=now + self.ttl_seconds, updated_at=now)
        )
        if result.rowcount == 1:
            self.renewed_at = now
            return True
        return False

    def release(self, conn: Connection) -> None:
        """Give the lease up at a clean shutdown so a standby takes over at once."""
        if self.token is None:
            return
        conn.execute(update(scheduler_lease).where(
            scheduler_lease.c.name == self.name, scheduler_lease.c.holder == self.holder,
            scheduler_lease.c.token == self.token).values(expires_at=0.0))
        self.token = None
