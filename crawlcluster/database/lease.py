"""The scheduler_lease table: one row per lease, holding its holder, expiry and fencing
token, and the broker run id its leader last saw. Each function is one statement; what the
lease means (leader, heartbeat, health) is :mod:`crawlcluster.dispatch.lease`'s.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from crawlcluster.db import upsert
from crawlcluster.schema import scheduler_lease


def take(conn: Connection, name: str, holder: str, expires_at: float, now: float) -> int | None:
    """Take the lease ``name`` for ``holder`` if nobody holds it or it expired before ``now``,
    with the next fencing token; return that token, or None when another holds it."""
    values = {"name": name, "holder": holder, "token": 1, "expires_at": expires_at, "updated_at": now}
    stmt = upsert(
        conn, scheduler_lease, values, key=["name"],
        update={"holder": holder, "token": scheduler_lease.c.token + 1, "expires_at": expires_at,
                "updated_at": now},
        where=scheduler_lease.c.expires_at < now,
    ).returning(scheduler_lease.c.token)
    token = conn.execute(stmt).scalar()
    return None if token is None else int(token)


def _held(name: str, holder: str, token: int) -> Any:
    return update(scheduler_lease).where(scheduler_lease.c.name == name, scheduler_lease.c.holder == holder,
                                         scheduler_lease.c.token == token)


def extend(conn: Connection, name: str, holder: str, token: int, expires_at: float, now: float) -> bool:
    """Move the expiry of the lease ``holder`` holds with ``token``; False if it holds it no more."""
    return conn.execute(_held(name, holder, token).values(expires_at=expires_at,
                                                          updated_at=now)).rowcount == 1


def give_up(conn: Connection, name: str, holder: str, token: int) -> None:
    """Expire the lease at once, if ``holder`` still holds it with ``token``."""
    conn.execute(_held(name, holder, token).values(expires_at=0.0))


def lease_row(conn: Connection, name: str) -> Any:
    """The lease's holder, expires_at and updated_at (one primary-key lookup), or None."""
    return conn.execute(select(scheduler_lease.c.holder, scheduler_lease.c.expires_at,
                               scheduler_lease.c.updated_at)
                        .where(scheduler_lease.c.name == name)).first()


def broker_run_id(conn: Connection, name: str) -> str | None:
    """The broker run id the last leader of ``name`` stored, or None (never stored)."""
    value = conn.execute(select(scheduler_lease.c.broker_run_id)
                         .where(scheduler_lease.c.name == name)).scalar()
    return None if value is None else str(value)


def store_broker_run_id(conn: Connection, name: str, holder: str, token: int, run_id: str) -> bool:
    """Store the broker run id ``holder`` saw, while it holds the lease with ``token``;
    False if it holds it no more."""
    return conn.execute(_held(name, holder, token).values(broker_run_id=run_id)).rowcount == 1
