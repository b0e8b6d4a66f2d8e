"""Admission limits the dispatcher applies: a slot per host and a token bucket per project.

A :class:`Slot` says how many requests a host may have in flight across the whole cluster
and how long to wait between two of them; :class:`HostSlots` keeps one per host, looked up
by its key (the host), as Scrapy's downloader keeps its download slots. A
:class:`TokenBucket` bounds a project's dispatch rate, and :class:`ProjectAdmission` says
how many rows a project may send this tick: its bucket, its in-queue limit and, after an
auto-pause, its trial size.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Iterator

# how often a tick looks again when the only thing holding work back is a full host
FULL_HOST_POLL_SECONDS = 0.05


@dataclass
class Slot:
    """One host's politeness state in the dispatcher."""

    host: str
    max_in_flight: int
    delay_seconds: float = 0.0
    in_flight: int = 0
    next_allowed_at: float = 0.0
    refill: int = 1  # free slots a host with rows in flight needs before a claim takes more


    def __str__(self) -> str:
        return (f"<Slot {self.host} in_flight={self.in_flight}/{self.max_in_flight} "
                f"delay={self.delay_seconds}s>")

    def can_take(self, now: float) -> bool:
        if self.delay_seconds > 0:
            # with a delay, one request at a time: when it left the broker is unknown, so
            # the delay counts from when the scheduler saw it finish
            return self.in_flight == 0 and now >= self.next_allowed_at
        return self.in_flight < self.max_in_flight

    def can_start(self, now: float) -> bool:
        """Whether a claim may begin taking this host's rows: :meth:`can_take`, and a host with
        rows in flight needs ``refill`` free slots first, so its rows go out in batches rather
        than one by one as its pages finish (each batch is a fetch, parse and store message)."""
        if not self.can_take(now):
            return False
        return (self.delay_seconds > 0 or self.in_flight == 0
                or self.max_in_flight - self.in_flight >= min(self.refill, self.max_in_flight))

    def take(self, now: float) -> None:
        self.in_flight += 1
        if self.delay_seconds > 0:
            self.next_allowed_at = now + self.delay_seconds

    def observe(self, in_flight: int, now: float) -> None:
        """The host's rows in flight as the table says at this tick."""
        if self.delay_seconds > 0 and self.in_flight > 0 and in_flight == 0:
            self.next_allowed_at = max(self.next_allowed_at, now + self.delay_seconds)
        self.in_flight = in_flight


class HostSlots:
    """Every host's :class:`Slot`, by key; ``concurrency`` and ``delay_seconds`` are the
    cluster's defaults, which a project's settings (and their per-host ``hosts`` entries)
    and a robots.txt ``Crawl-delay`` override."""

    def __init__(self, concurrency: int, delay_seconds: float, refill_fraction: float = 0.0,
                 refill_most: int = 1) -> None:
        self.concurrency = concurrency
        self.delay_seconds = delay_seconds
        # per_host_refill_fraction: a host with rows in flight takes more once this share of its
        # slots is free (at most refill_most, the fetch batch size; at least one)
        self.refill_fraction = refill_fraction
        self.refill_most = max(1, refill_most)
        self._slots: dict[str, Slot] = {}

    def __iter__(self) -> Iterator[Slot]:
        return iter(self._slots.values())

    def __len__(self) -> int:
        return len(self._slots)

    def get(self, key: str) -> Slot | None:
        return self._slots.get(key)

    def clear(self) -> None:
        """Forget what this dispatcher sent: the next recount says what is in flight."""
        self._slots.clear()

    def slot(self, host: str, options: dict[str, Any], crawl_delay: float | None,
             in_flight: dict[str, int]) -> Slot:
        """The host's slot with the limits ``options`` (a project's settings) give it now; a
        new slot starts from ``in_flight`` (rows in flight per host, as last counted)."""
        overrides = (options.get("hosts") or {}).get(host, {})
        concurrency = options.get("per_host_concurrency", self.concurrency)
        max_in_flight = int(overrides.get("per_host_concurrency", concurrency))
        delay = float(overrides.get("per_host_delay", options.get("per_host_delay", self.delay_seconds)))
        if crawl_delay:
            delay = max(delay, float(crawl_delay))
        slot = self._slots.get(host)
        if slot is None:
            slot = self._slots[host] = Slot(host, max_in_flight, delay, in_flight.get(host, 0))
        slot.max_in_flight, slot.delay_seconds = max_in_flight, delay
        slot.refill = max(1, min(self.refill_most, int(max_in_flight * self.refill_fraction)))
        return slot

    def blocked(self, now: float) -> set[str]:
        """Hosts that may take nothing now: full, waiting for slots to refill, or within their delay."""
        return {host for host, slot in self._slots.items() if not slot.can_start(now)}

    def observe(self, in_flight: dict[str, int], now: float) -> None:
        """Rows in flight per host, as the table says at this tick."""
        for slot in self._slots.values():
            slot.observe(in_flight.get(slot.host, 0), now)

    def next_wait(self, now: float, idle_seconds: float) -> float:
        """Until a host may take its next request: its delay's end, or soon when a host is
        only full (its slots free as pages are parsed, at any moment); ``idle_seconds``
        when no host waits."""
        waits = [slot.next_allowed_at - now for slot in self._slots.values() if slot.next_allowed_at > now]
        slots = self._slots.values()
        if any(slot.delay_seconds == 0 and not slot.can_start(now) for slot in slots):
            waits.append(FULL_HOST_POLL_SECONDS)
        return max(0.01, min(waits)) if waits else idle_seconds


@dataclass
class TokenBucket:
    """``rate`` tokens per second up to ``burst``; a rate of 0 or None means no limit."""

    rate: float | None
    burst: float | None
    tokens: float = 0.0
    updated_at: float = field(default_factory=time.monotonic)

    def configure(self, rate: float | None, burst: float | None) -> None:
        if (rate, burst) != (self.rate, self.burst):
            self.rate, self.burst = rate, burst
            self.tokens = min(self.tokens, self.capacity)

    @property
    def limited(self) -> bool:
        return bool(self.rate)

    @property
    def capacity(self) -> float:
        return float(self.burst) if self.burst else max(1.0, float(self.rate or 1.0))

    def available(self, now: float | None = None) -> float:
        if not self.limited:
            return float("inf")
        now = time.monotonic() if now is None else now
        self.tokens = min(self.capacity, self.tokens + (now - self.updated_at) * float(self.rate or 0.0))
        self.updated_at = now
        return self.tokens

    def consume(self, count: int) -> None:
        if self.limited:
            self.tokens -= count

    def seconds_until(self, count: float = 1.0) -> float:
        if not self.limited or self.tokens >= count:
            return 0.0
        return (count - self.tokens) / float(self.rate or 1.0)  # limited: rate is set


@dataclass(frozen=True)
class Room:
    """What a project may send this tick: ``rows``; ``held_back`` when its in-queue limit
    (or trial) kept it under its share; ``wait`` the seconds until its bucket has a token,
    when the bucket alone holds it at zero."""

    rows: int
    held_back: bool
    wait: float | None = None


class ProjectAdmission:
    """Per-project limits: a token bucket (rate, burst), the in-queue limit (the project's
    ``queue_limit`` or ``max_queued_per_project``) and, once ``auto_pause_failures`` site
    failures in a row paused it, a trial of ``trial_size`` rows in flight."""

    def __init__(self, max_queued_per_project: int, auto_pause_failures: int, trial_size: int) -> None:
        self.max_queued_per_project = max_queued_per_project
        self.auto_pause_failures = auto_pause_failures
        self.trial_size = trial_size
        self.buckets: dict[str, TokenBucket] = {}

    def room(self, project: dict[str, Any], share: int, queued: int) -> Room:
        """Rows ``project`` (a projects row) may claim, out of ``share``, with ``queued`` of
        its rows queued already."""
        bucket = self.buckets.setdefault(project["name"], TokenBucket(None, None))
        bucket.configure(project["rate"], project["burst"])
        limit = project["queue_limit"] or self.max_queued_per_project
        rows = min(share, limit - queued)
        if self.auto_pause_failures and project["consecutive_failures"] >= self.auto_pause_failures:
            rows = min(rows, self.trial_size - queued)  # on trial after an auto-pause
        held_back = rows < share  # rows wait for queued ones to finish: the next count sees them go
        if bucket.limited:
            rows = int(min(rows, bucket.available()))
            if rows <= 0:
                return Room(rows, held_back, bucket.seconds_until(1))
        return Room(rows, held_back)

    def consume(self, project: str, rows: int) -> None:
        """``rows`` of ``project`` were claimed: take them from its bucket."""
        self.buckets[project].consume(rows)
