"""Each host's robots.txt as the cluster knows it: the ``hosts`` table's robots state, read and written.

:class:`RobotsCache` holds each host's robots.txt for the dispatcher (shared by every
project, stored in the ``hosts`` table) and answers whether a URL may be fetched;
:func:`record_robots` stores what a fetch of robots.txt gave (the store stage calls it).
How the dispatcher acts on it, row by row, is :mod:`crawlcluster.dispatch.robots_gate`.
The hosts table's states are declared with it (:mod:`crawlcluster.schema`) and its
statements are :mod:`crawlcluster.database.hosts`.

A robots.txt that answers 5xx or cannot be reached postpones its host for the retry
policy's next delay; after ``robots_error_attempts`` such fetches in a row the host is
``unreachable``. Per RFC 9309 (section 2.3.1.4) nothing on such a host is fetched: the
scheduler ends its pending rows ``failed`` (kind ``robots``) with the reason, so a crawl
never waits on a dead host for ever. Those rows fail before the host's robots.txt is asked
again (after ``robots_unreachable_seconds``), and re-opening a failed row
(:func:`crawlcluster.database.tasks.reopen_failed_rows`) makes its host forget its failures.
A robots.txt that fails for good (broken HTTP, TLS, a certificate) makes its host
unreachable at once.

A robots.txt is parsed once per fetch: the cache re-reads a host's state every few seconds
(without its text) and parses the text again only when the host's ``robots_fetched_at``
changed (:data:`PARSES` counts the parses). A ``Crawl-delay`` over
``max_crawl_delay_seconds`` is capped, and the host's ``robots_note`` (shown by
``crawlcluster status PROJECT``) and the log say so, as they say a robots.txt was cut to
``max_robots_bytes`` (by the parse stage, :mod:`workers.robots`).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from protego import Protego
from sqlalchemy.engine import Connection

from crawlcluster.database.hosts import host_rows, robots_bodies, robots_failures, upsert_host
from crawlcluster.error_text import bounded_error
from crawlcluster.schema import (
    ROBOTS_ERROR,
    ROBOTS_FETCHING,
    ROBOTS_MISSING,
    ROBOTS_OK,
    ROBOTS_UNKNOWN,
    ROBOTS_UNREACHABLE,
)

logger = logging.getLogger(__name__)

# robots.txt texts parsed by this process's scheduler caches: read by tests and bench to show
# a robots.txt is parsed once per fetch, not once per refresh
PARSES = 0


def parse_robots(body: str) -> Protego:
    """``body`` parsed, counted in :data:`PARSES`."""
    global PARSES
    PARSES += 1
    return Protego.parse(body)


@dataclass
class HostRobots:
    status: str
    parser: Protego | None
    crawl_delay: float | None
    expires_at: float | None
    blocked_until: float | None
    updated_at: float
    failures: int = 0
    error: str | None = None

    def unreachable_reason(self, host: str) -> str:
        """The error text of a row that ends because its host's robots.txt is unreachable."""
        attempts = "1 attempt" if self.failures == 1 else f"{self.failures} attempts"
        return (f"robots.txt of {host} unreachable after {attempts} "
                f"({self.error or 'no answer'}); "
                "nothing on this host was fetched")

    def needs_fetch(self, now: float, fetching_timeout: float) -> bool:
        if self.status == ROBOTS_UNKNOWN:
            return True
        if self.status == ROBOTS_FETCHING:
            return now - self.updated_at > fetching_timeout
        if self.status == ROBOTS_ERROR:
            return now >= (self.blocked_until or 0)
        return self.expires_at is not None and now >= self.expires_at


class RobotsCache:
    """The hosts table as the scheduler needs it, re-read for a host every few seconds."""

    def __init__(self, user_agent: str, refresh_seconds: float = 5.0) -> None:
        self.user_agent = user_agent
        self.refresh_seconds = refresh_seconds
        self._hosts: dict[str, tuple[float, HostRobots]] = {}
        # each host's parsed rules, with the robots_fetched_at they were parsed for
        self._parsed: dict[str, tuple[float | None, Protego]] = {}

    def get(self, conn: Connection, names: set[str]) -> dict[str, HostRobots]:
        now = time.monotonic()
        stale = [h for h in names if h not in self._hosts or now - self._hosts[h][0] > self.refresh_seconds]
        if stale:
            found = host_rows(conn, stale)
            with_rules = {name: row.robots_fetched_at for name, row in found.items()
                          if row.robots_status == ROBOTS_OK and row.has_body}
            self._parse_new(conn, with_rules)
            for name in stale:
                row = found.get(name)
                if row is None:
                    info = HostRobots(ROBOTS_UNKNOWN, None, None, None, None, 0.0)
                else:
                    parser = self._parsed[name][1] if name in with_rules else None
                    info = HostRobots(row.robots_status, parser, row.crawl_delay, row.robots_expires_at,
                                      row.blocked_until, row.updated_at, row.robots_failures or 0,
                                      row.robots_error)
                self._hosts[name] = (now, info)
        return {h: self._hosts[h][1] for h in names}

    def _parse_new(self, conn: Connection, fetched: dict[str, float | None]) -> None:
        """Parse the robots.txt of the hosts in ``fetched`` (host -> robots_fetched_at) whose
        rules this cache has not parsed for that fetch yet; their text is read only then."""
        new = [name for name, at in fetched.items()
               if name not in self._parsed or self._parsed[name][0] != at]
        for name, (fetched_at, body) in robots_bodies(conn, new).items():
            self._parsed[name] = (fetched_at, parse_robots(body or ""))

    def refresh(self, conn: Connection, names: set[str]) -> dict[str, HostRobots]:
        """``names`` read from the table now, whatever their age in the cache."""
        for name in names:
            self._hosts.pop(name, None)
        return self.get(conn, names) if names else {}

    def mark_fetching(self, host: str, now: float) -> None:
        self._hosts[host] = (time.monotonic(), HostRobots(ROBOTS_FETCHING, None, None, None, None, now))

    def waiting_hosts(self, conn: Connection, now: float, fetching_timeout: float) -> set[str]:
        """Hosts whose robots.txt is being fetched or failed recently: re-read from the
        table every tick (a small set), so a host is released as soon as its robots.txt is in."""
        waiting = {h for h, (_, info) in self._hosts.items()
                   if info.status in (ROBOTS_FETCHING, ROBOTS_ERROR)}
        if not waiting:
            return set()
        for host in waiting:
            self._hosts[host] = (0.0, self._hosts[host][1])  # force a re-read
        fresh = self.get(conn, waiting)
        return {h for h, info in fresh.items()
                if (info.status == ROBOTS_FETCHING and not info.needs_fetch(now, fetching_timeout))
                or (info.status == ROBOTS_ERROR and now < (info.blocked_until or 0))}

    def allows(self, info: HostRobots, url: str) -> bool:
        return info.parser is None or info.parser.can_fetch(url, self.user_agent)


def record_robots(conn: Connection, host: str, *, body: str | None, status_code: int | None,
                  error: str | None,
                  user_agent: str, ttl_seconds: float, error_attempts: int, error_delays: list[float],
                  unreachable_seconds: float, kind: str | None = None, now: float | None = None,
                  max_crawl_delay: float | None = None, cut_from: int | None = None,
                  final: bool = False) -> str:
    """Store what fetching a host's robots.txt gave: rules (2xx), allow-all (4xx), or (5xx,
    unreachable) a block for the next of ``error_delays``; the ``error_attempts``-th such
    failure in a row (or a ``final`` one) makes the host unreachable for
    ``unreachable_seconds``. A Crawl-delay over ``max_crawl_delay`` is stored capped, and
    the host's note says so, as it says the text was cut from ``cut_from`` bytes. Returns the state."""
    now = time.time() if now is None else now
    if body is not None and status_code is not None and 200 <= status_code < 300:
        delay, note = _granted_delay(Protego.parse(body).crawl_delay(user_agent), max_crawl_delay)
        notes = [note] if note else []
        if cut_from:
            # the fetcher stops reading past the bound, so cut_from is the size or a lower bound of it
            notes.append(f"robots.txt over max_robots_bytes ({cut_from:,} bytes or more): the first "
                         f"{len(body.encode()):,} kept and parsed")
        if notes:
            logger.warning("robots.txt of %s: %s", host, "; ".join(notes))
        upsert_host(conn, host, now, robots_status=ROBOTS_OK, robots_body=body, crawl_delay=delay,
                    robots_fetched_at=now, robots_expires_at=now + ttl_seconds, blocked_until=None,
                    robots_failures=0, robots_error=None, robots_note="; ".join(notes) or None)
        return ROBOTS_OK
    if status_code is not None and 400 <= status_code < 500:
        upsert_host(conn, host, now, robots_status=ROBOTS_MISSING, robots_body=None, crawl_delay=None,
                    robots_fetched_at=now, robots_expires_at=now + ttl_seconds, blocked_until=None,
                    robots_failures=0, robots_error=None, robots_note=None)
        return ROBOTS_MISSING
    failures = robots_failures(conn, host) + 1
    reason = error or (f"HTTP {status_code}" if status_code is not None else "no answer")
    if kind and kind != "http":
        reason = f"{kind}: {reason}"
    reason = bounded_error(reason) or reason
    if failures >= error_attempts or final:
        logger.warning("robots.txt of %s unreachable after %d attempts (%s); the host's rows fail", host,
                       failures,
                       reason)
        upsert_host(conn, host, now, robots_status=ROBOTS_UNREACHABLE, robots_body=None,
                    robots_fetched_at=now,
                    robots_expires_at=now + unreachable_seconds, blocked_until=None, robots_failures=failures,
                    robots_error=reason)
        return ROBOTS_UNREACHABLE
    wait = error_delays[min(failures - 1, len(error_delays) - 1)] if error_delays else 0.0
    logger.warning("robots.txt of %s unavailable (%s), attempt %d of %d; postponing the host for %gs", host,
                   reason, failures, error_attempts, wait)
    upsert_host(conn, host, now, robots_status=ROBOTS_ERROR, robots_fetched_at=now, blocked_until=now + wait,
                robots_failures=failures, robots_error=reason)
    return ROBOTS_ERROR


def _granted_delay(asked: float | None, cap: float | None) -> tuple[float | None, str | None]:
    """(the Crawl-delay obeyed, a note when it is not what robots.txt asked): at most ``cap``;
    a negative or not-a-number one is no Crawl-delay at all."""
    if asked is None or math.isnan(asked) or asked < 0:
        return None, None
    if cap is not None and asked > cap:
        return cap, f"Crawl-delay {asked:g} s capped to {cap:g} s (max_crawl_delay_seconds)"
    return asked, None
