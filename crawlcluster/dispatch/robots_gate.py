"""Robots gating: which of a claim's candidate rows robots.txt lets the dispatcher send.

A host whose robots.txt is not known yet (or has expired) gets a robots.txt fetch queued in
the claim's transaction and its rows wait; rows a robots.txt disallows end ``disallowed``;
rows of a host whose robots.txt stayed unreachable end ``failed`` (RFC 9309, see
:mod:`crawlcluster.dispatch.robots`). The hosts' robots state itself lives in that module.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection

from crawlcluster.database import claims
from crawlcluster.database.hosts import upsert_host
from crawlcluster.dispatch.robots import HostRobots, RobotsCache
from crawlcluster.request_rows import task_row
from crawlcluster.schema import (
    ROBOTS_CALLBACK,
    ROBOTS_ERROR,
    ROBOTS_FETCHING,
    ROBOTS_UNKNOWN,
    ROBOTS_UNREACHABLE,
)
from crawlcluster.spider import Request


class RobotsGate:
    """robots.txt as the dispatcher applies it; ``fetching_timeout`` (the queued deadline)
    is how long a robots.txt fetch may take before it is asked again."""

    def __init__(self, cache: RobotsCache, fetching_timeout: float) -> None:
        self.cache = cache
        self.fetching_timeout = fetching_timeout

    def waiting_hosts(self, conn: Connection, now: float) -> set[str]:
        """Hosts whose robots.txt is being fetched or failed recently: not worth reading rows of."""
        return self.cache.waiting_hosts(conn, now, self.fetching_timeout)

    def check(self, conn: Connection, project: str, candidates: list[dict[str, Any]],
              now: float) -> RobotsCheck:
        """A check of one claim's ``candidates``, in the claim's transaction ``conn``."""
        infos = self.cache.get(conn, {c["host"] for c in candidates})
        # an unreachable host's rows are about to fail: read it afresh, since a user's
        # retry of its failed rows may have reset it a moment ago
        unreachable = {h for h, info in infos.items() if info.status == ROBOTS_UNREACHABLE}
        infos.update(self.cache.refresh(conn, unreachable))
        return RobotsCheck(self, conn, project, infos, now)


class RobotsCheck:
    """One claim's pass over its candidates: :meth:`admits` each, then :meth:`finish`."""

    def __init__(self, gate: RobotsGate, conn: Connection, project: str, infos: dict[str, HostRobots],
                 now: float) -> None:
        self.gate, self.conn, self.project, self.infos, self.now = gate, conn, project, infos, now
        self.queued_rows: list[dict[str, Any]] = []  # robots.txt fetches, queued in the transaction
        self.disallowed: list[str] = []
        self.unreachable: dict[str, list[str]] = {}  # per host whose robots.txt stayed unreachable
        self.asked: set[str] = set()

    def admits(self, candidate: dict[str, Any]) -> bool:
        """Whether robots.txt lets ``candidate`` be sent now; a row it turns away is
        recorded (to fail, or to wait for its host's robots.txt)."""
        host = candidate["host"]
        info = self.infos[host]
        if info.status == ROBOTS_UNREACHABLE:
            # its rows fail before anything else, even once its time is up (with
            # robots_unreachable_seconds small, asking again first would postpone them for
            # ever); after that time robots.txt is asked again, for later rows
            self.unreachable.setdefault(host, []).append(candidate["task_id"])
            if host not in self.asked and info.needs_fetch(self.now, self.gate.fetching_timeout):
                self._ask(candidate)
            return False
        if host in self.asked:
            return False
        if info.needs_fetch(self.now, self.gate.fetching_timeout):
            self._ask(candidate)
            return False
        if info.status in (ROBOTS_FETCHING, ROBOTS_ERROR, ROBOTS_UNKNOWN):
            return False
        if not self.gate.cache.allows(info, candidate["url"]):
            self.disallowed.append(candidate["task_id"])
            return False
        return True

    def crawl_delay(self, host: str) -> float | None:
        info = self.infos.get(host)
        return info.crawl_delay if info is not None else None

    def finish(self) -> None:
        """End the rows robots.txt turned away for good, in the claim's transaction."""
        user_agent = self.gate.cache.user_agent
        reason = f"disallowed by robots.txt for User-agent {user_agent!r}"
        claims.mark_disallowed(self.conn, self.disallowed, reason)
        for host, ids in self.unreachable.items():
            # RFC 9309: an unreachable robots.txt means nothing on the host is fetched
            reason = self.infos[host].unreachable_reason(host)
            claims.mark_failed(self.conn, ids, "robots", reason, now=self.now)

    def _ask(self, candidate: dict[str, Any]) -> None:
        """Queue a fetch of the candidate host's robots.txt and hold the host until it is in."""
        host, now = candidate["host"], self.now
        self.asked.add(host)
        scheme = candidate["url"].split("://", 1)[0]
        url = f"{scheme}://{host}/robots.txt"
        request = Request(url, callback=ROBOTS_CALLBACK, retries=0, priority=10**6)
        row = task_row(self.project, url, request, spider=None, project_settings=None, depth=0, now=now)
        upsert_host(self.conn, host, now, robots_status=ROBOTS_FETCHING)
        self.gate.cache.mark_fetching(host, now)
        self.queued_rows.append(claims.queue_row_now(self.conn, row, self.gate.fetching_timeout, now=now))


class NoRobotsCheck:
    """The check of a project that does not obey robots.txt: every row passes."""

    @property
    def queued_rows(self) -> list[dict[str, Any]]:
        return []

    def admits(self, candidate: dict[str, Any]) -> bool:
        return True

    def crawl_delay(self, host: str) -> float | None:
        return None

    def finish(self) -> None:
        pass
