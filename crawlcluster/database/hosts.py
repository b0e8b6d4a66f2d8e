"""The hosts table: each host's robots.txt state as the scheduler and the store stage read
and write it (the rules applied to it live in :mod:`crawlcluster.dispatch.robots`).
"""

from __future__ import annotations

from typing import Any, Sequence

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from crawlcluster.db import upsert
from crawlcluster.schema import (
    ROBOTS_ERROR,
    ROBOTS_FETCHING,
    ROBOTS_UNKNOWN,
    ROBOTS_UNREACHABLE,
    hosts,
)


def host_rows(conn: Connection, names: Sequence[str]) -> dict[str, Any]:
    """The rows of the hosts in ``names`` that the table knows, by host name, without their
    robots.txt text (up to max_robots_bytes each, read every few seconds for every host a
    claim touches): ``has_body`` says whether there is one, :func:`robots_bodies` reads it."""
    columns = [column for column in hosts.c if column.name != "robots_body"]
    stmt = select(*columns, hosts.c.robots_body.is_not(None).label("has_body"))
    return {row.host: row for row in conn.execute(stmt.where(hosts.c.host.in_(list(names))))}


def robots_bodies(conn: Connection, names: Sequence[str]) -> dict[str, tuple[float | None, str | None]]:
    """``(robots_fetched_at, robots_body)`` of the hosts in ``names``, by host name."""
    if not names:
        return {}
    rows = conn.execute(select(hosts.c.host, hosts.c.robots_fetched_at, hosts.c.robots_body)
                        .where(hosts.c.host.in_(list(names))))
    return {host: (fetched_at, body) for host, fetched_at, body in rows}


def robots_notes(conn: Connection, names: Sequence[str]) -> dict[str, str]:
    """The robots notes (a Crawl-delay capped, a robots.txt cut) of the hosts in ``names`` that have one."""
    if not names:
        return {}
    rows = conn.execute(select(hosts.c.host, hosts.c.robots_note)
                        .where(hosts.c.host.in_(list(names)), hosts.c.robots_note.is_not(None)))
    return {host: note for host, note in rows}


def upsert_host(conn: Connection, host: str, now: float, **values: Any) -> None:
    """Create or change ``host``'s row with ``values``."""
    conn.execute(upsert(conn, hosts, {"host": host, "updated_at": now, **values}, key=["host"],
                        update={"updated_at": now, **values}))


def robots_failures(conn: Connection, host: str) -> int:
    """Failed fetches of ``host``'s robots.txt in a row so far (0 for an unknown host)."""
    return conn.execute(select(hosts.c.robots_failures).where(hosts.c.host == host)).scalar() or 0


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


def forget_fetching(conn: Connection, host: str, now: float) -> int:
    """``host``'s robots.txt, asked for and not fetched (the address guard refused it for the
    project that asked), is ``unknown`` again: the next project that may reach it asks anew."""
    return conn.execute(update(hosts).where(hosts.c.host == host, hosts.c.robots_status == ROBOTS_FETCHING)
                        .values(robots_status=ROBOTS_UNKNOWN, updated_at=now)).rowcount


def release_fetching(conn: Connection, now: float) -> int:
    """Hosts whose robots.txt was being fetched start again from ``unknown``; only for a
    database one process owns (an embedded crawl's file at start)."""
    return conn.execute(update(hosts).where(hosts.c.robots_status == ROBOTS_FETCHING)
                        .values(robots_status=ROBOTS_UNKNOWN, updated_at=now)).rowcount


def postponed_hosts(conn: Connection, names: Sequence[str], now: float,
                    limit: int) -> list[tuple[str, str, float]]:
    """(host, robots state, blocked until) of at most ``limit`` hosts of ``names`` postponed
    past ``now``, the soonest released first (read by primary key, only for ``names``)."""
    rows = conn.execute(select(hosts.c.host, hosts.c.robots_status, hosts.c.blocked_until)
                        .where(hosts.c.host.in_(list(names)), hosts.c.blocked_until > now)
                        .order_by(hosts.c.blocked_until, hosts.c.host).limit(limit)).all()
    return [(host, status, blocked_until) for host, status, blocked_until in rows]
