"""The claim: which due rows of one project a tick takes, chosen in an open transaction.

A claim reads a few more due rows than the project's room (some are passed over: a full
host, robots.txt), locks them (``SKIP LOCKED`` on PostgreSQL), and chooses those the host
slots and robots.txt let through. It stays open: :mod:`crawlcluster.dispatch.pipeline`
marks the chosen rows queued, fences the lease and commits, then sends them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Connection

from crawlcluster.database import claims
from crawlcluster.dispatch.limits import HostSlots, Slot
from crawlcluster.dispatch.robots_gate import NoRobotsCheck, RobotsGate

# Candidates a claim reads beyond its room, for rows it passes over (host full, robots.txt)
MIN_SPARE_CANDIDATES, MAX_SPARE_CANDIDATES = 32, 500


@dataclass
class Claim:
    """Rows chosen in an open transaction, to be marked queued, fenced, committed, then sent."""

    project: str
    conn: Any
    transaction: Any
    now: float
    chosen: list[dict[str, Any]] = field(default_factory=list)  # locked pending rows, marked queued at commit
    queued_rows: list[dict[str, Any]] = field(default_factory=list)  # queued in the transaction (robots.txt)
    committed: bool = False
    found: bool = False  # whether any due row was read (none: the project may be finished)
    held_back: bool = False  # whether a host limit passed rows over

    @property
    def size(self) -> int:
        return len(self.chosen) + len(self.queued_rows)


class ClaimReader:
    """Reads and chooses claims, with the dispatcher's host slots and robots gate."""

    def __init__(self, slots: HostSlots, robots: RobotsGate) -> None:
        self.slots = slots
        self.robots = robots
        self._spare: dict[str, int] = {}  # per project: candidates to read beyond the room

    def read(self, conn: Connection, transaction: Any, project: dict[str, Any], room: int, obey_robots: bool,
             in_flight: dict[str, int], now: float) -> Claim:
        """Up to ``room`` due rows of ``project`` (a projects row), locked in ``transaction``;
        ``in_flight`` is rows in flight per host, as last counted."""
        name = project["name"]
        claim = Claim(name, conn, transaction, now)
        skip = self.slots.blocked(now)
        claim.held_back = bool(skip)  # a full host, or one in its delay
        if obey_robots:
            skip |= self.robots.waiting_hosts(conn, now)
        # a few more than the room, for the ones a host limit or robots.txt passes over
        spare = self._spare.get(name, MAX_SPARE_CANDIDATES)
        narrow = claims.reads_narrow(conn)
        candidates = claims.due_candidates(conn, name, room + min(room, spare), skip, now=now, narrow=narrow)
        claim.found = bool(candidates)
        if candidates:
            options = project["settings"] or {}
            examined = self._choose(claim, candidates, options, room, obey_robots, in_flight)
            if narrow and claim.chosen:
                claim.chosen = claims.fill_candidates(conn, claim.chosen)
            # every candidate is locked until the commit: read about twice as many spare ones
            # as were passed over this time (the next read skips locked rows, and pays for them)
            passed_over = examined - len(claim.chosen)
            self._spare[name] = max(MIN_SPARE_CANDIDATES, min(MAX_SPARE_CANDIDATES, 2 * passed_over))
        return claim

    def _choose(self, claim: Claim, candidates: list[dict[str, Any]], options: dict[str, Any], room: int,
                obey_robots: bool, in_flight: dict[str, int]) -> int:
        """Choose candidates into ``claim`` until it holds ``room`` rows; the number examined."""
        now = claim.now
        check = (self.robots.check(claim.conn, claim.project, candidates, now) if obey_robots
                 else NoRobotsCheck())
        host_slots: dict[str, Slot] = {}  # resolved once per host in this claim
        refused: set[str] = set()  # hosts this claim takes nothing from
        examined = 0
        for examined, candidate in enumerate(candidates, 1):
            host = candidate["host"]
            if not check.admits(candidate):
                continue
            slot = host_slots.get(host)
            if slot is None:
                slot = host_slots[host] = self.slots.slot(host, options, check.crawl_delay(host), in_flight)
                if not slot.can_start(now):  # full, or waiting for its slots to refill
                    refused.add(host)
            if host in refused or not slot.can_take(now):
                claim.held_back = True
                continue
            slot.take(now)
            claim.chosen.append(candidate)
            if len(claim.chosen) >= room:
                break
        check.finish()
        claim.queued_rows.extend(check.queued_rows)
        return examined
