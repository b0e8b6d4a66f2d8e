"""Why a pending row is not fetched yet, in sentences, by the dispatcher's own rules.

The dispatcher claims a project's due rows when the project runs, within its in-queue
limit and token bucket (:class:`~crawlcluster.dispatch.limits.ProjectAdmission`), on hosts
whose slot can take a request (:class:`~crawlcluster.dispatch.limits.HostSlots`) and whose
robots.txt is known and allows the URL (:class:`~crawlcluster.dispatch.robots.RobotsCache`).
This module builds those same objects from the table's state now and asks them, rather
than restating their rules, so the URL page says what the scheduler would decide.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy.engine import Connection

from crawlcluster.database import console as console_rows
from crawlcluster.dispatch import lease
from crawlcluster.dispatch.limits import HostSlots, ProjectAdmission
from crawlcluster.dispatch.robots import RobotsCache
from crawlcluster.schema import (
    PENDING,
    ROBOTS_ERROR,
    ROBOTS_FETCHING,
    ROBOTS_OK,
    ROBOTS_UNKNOWN,
    RUNNING,
)
from crawlcluster.settings import Settings
from crawlcluster.stats import clock


def _at(when: float, now: float) -> str:
    return f"in {clock(when - now)} ({time.strftime('%H:%M:%S', time.gmtime(when))} UTC)"


def not_fetched_because(conn: Connection, row: dict[str, Any], project: dict[str, Any], s: Settings,
                        now: float | None = None) -> list[str]:
    """Sentences on what holds the pending ``row`` (a crawl_tasks row) of ``project`` (its
    projects row) back, most decisive first; empty when the row is not pending."""
    now = time.time() if now is None else now
    if row["status"] != PENDING:
        return []
    reasons: list[str] = []
    if project["status"] != RUNNING:
        why = project.get("pause_reason") or ""
        reasons.append(f"the project is {project['status']}" + (f": {why}" if why else ""))
    if row["next_run_at"] > now:
        what = "retry back-off after: " + row["error"] if row.get("error") else "due later"
        reasons.append(f"{what}; due {_at(row['next_run_at'], now)}")
    health = lease.scheduler_health(conn, now=now)
    if health.message:
        reasons.append(health.message)
    options = project["settings"] or {}
    host = row["host"]
    crawl_delay = None
    if options.get("obey_robots", s.obey_robots):
        info = RobotsCache(s.user_agent).get(conn, {host})[host]
        crawl_delay = info.crawl_delay
        if info.status in (ROBOTS_UNKNOWN, ROBOTS_FETCHING):
            state = "being fetched" if info.status == ROBOTS_FETCHING else "not fetched yet"
            reasons.append(f"robots.txt of {host} is {state}: the host's rows wait for it")
        elif info.status == ROBOTS_ERROR and now < (info.blocked_until or 0):
            reasons.append(f"host {host} postponed: robots.txt failed ({info.error or 'no answer'}), "
                           f"next try {_at(info.blocked_until or now, now)}")
        elif info.status == ROBOTS_OK and info.parser is not None and not info.parser.can_fetch(
                row["url"], s.user_agent):
            reasons.append(f"robots.txt of {host} disallows this URL: it will end as disallowed")
    in_flight = console_rows.in_flight_of_host(conn, host)
    slot = HostSlots(s.per_host_concurrency, s.per_host_delay_seconds, s.per_host_refill_fraction,
                     s.fetch_batch_size).slot(host, options, crawl_delay, {host: in_flight})
    if slot.delay_seconds > 0:
        last = console_rows.last_fetch_of_host(conn, project["name"], host, now)
        slot.next_allowed_at = (last or 0.0) + slot.delay_seconds
    if slot.can_take(now) and not slot.can_start(now):
        reasons.append(f"host {host} has {slot.in_flight} of {slot.max_in_flight} requests in flight: "
                       f"more go once {slot.refill} are free (per_host_refill_fraction)")
    elif not slot.can_take(now):
        if slot.delay_seconds > 0 and slot.in_flight == 0:
            reasons.append(f"host {host} is in its delay of {slot.delay_seconds:g} s: next request "
                           f"{_at(slot.next_allowed_at, now)}")
        elif slot.delay_seconds > 0:
            reasons.append(f"host {host} has a request in flight and a delay of {slot.delay_seconds:g} s "
                           "(one at a time)")
        else:
            reasons.append(f"host {host} is full: {slot.in_flight} of {slot.max_in_flight} requests "
                           "in flight")
    admission = ProjectAdmission(s.max_queued_per_project, s.auto_pause_failures, s.auto_pause_trial_size)
    queued = console_rows.queued_of_project(conn, project["name"])
    # the bucket's share is judged apart below: a bucket built now has no tokens saved yet
    room = admission.room({**project, "rate": None}, 1, queued)
    if room.rows <= 0:
        limit = project["queue_limit"] or s.max_queued_per_project
        if queued >= limit:
            reasons.append(f"queue limit: {queued:,} of {limit:,} rows of the project are queued")
        else:
            reasons.append(f"on trial after an auto-pause: at most {s.auto_pause_trial_size} rows in flight")
    if project.get("rate"):
        burst = project.get("burst")
        reasons.append(f"rate limit: the project is dispatched at {project['rate']:g} rows/s"
                       + (f" (burst {burst:g})" if burst else "") + ", rows due before it go first")
    if not reasons:
        reasons.append("nothing holds it back: the scheduler claims it at one of its next ticks "
                       "(highest priority first, then oldest due)")
    return reasons
