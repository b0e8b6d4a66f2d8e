"""Outcomes: the end state the store stage writes for fetched rows, and retries put back
as pending with their back-off.

The retry policy (how many retries, which delays, the Retry-After cap) is
:mod:`crawlcluster.scheduling`'s: the caller hands in ``retry_rules``, a row's fetch
options to its rules, so this layer imports nothing of the spider API.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Callable, Iterable, Protocol, Sequence

from sqlalchemy import case, select, update
from sqlalchemy.engine import Connection

from crawlcluster.database.wakeup import notify_work
from crawlcluster.error_text import bounded_error
from crawlcluster.schema import (
    DONE,
    FAILED,
    PENDING,
    QUEUED,
    crawl_tasks,
)

logger = logging.getLogger(__name__)


class RetryRules(Protocol):
    """What this layer reads of one row's retry rules (:class:`crawlcluster.scheduling.RetryRules`)."""

    @property
    def retries(self) -> int: ...

    @property
    def timeout_retries(self) -> int: ...

    @property
    def retry_after_max_seconds(self) -> float: ...

    def delay(self, attempt: int) -> float: ...


# a row's fetch options to its retry rules: crawlcluster.scheduling.RetryRules.of_row
RetryRulesOf = Callable[[dict[str, Any] | None], RetryRules]


def schedule_retries(conn: Connection, failures: Sequence[dict[str, Any]], retry_rules: RetryRulesOf,
                     now: float | None = None) -> set[str]:
    """Put retryable failures back as pending with their back-off (or the server's
    Retry-After, up to the policy's cap), by the rules ``retry_rules`` gives each row's fetch
    options; return the ids retried. Rows out of retries, and
    timeouts out of their policy's timeout retries, are left to record_outcomes."""
    now = time.time() if now is None else now
    wanted = {f["id"]: f for f in failures if f.get("retry")}
    if not wanted:
        return set()
    rows = conn.execute(
        select(crawl_tasks.c.task_id, crawl_tasks.c.retries_left, crawl_tasks.c.timeouts, crawl_tasks.c.fetch)
        .where(crawl_tasks.c.task_id.in_(list(wanted)), crawl_tasks.c.status == QUEUED,
               crawl_tasks.c.retries_left > 0)
        .with_for_update()
    ).all()
    retried = set()
    for task, retries_left, timeouts, options in rows:
        failure = wanted[task]
        rules = retry_rules(options)
        total = rules.retries
        attempt = max(0, total - retries_left)  # retries so far, of any kind: picks the delay
        timed_out = failure.get("kind") == "timeout"
        if timed_out and timeouts >= rules.timeout_retries:
            # timeouts are counted on their own: a 500 before them is no timeout
            failure["error"] = f"{failure['error']} (after {timeouts + 1} tries that timed out; " \
                               f"timeout_retries={rules.timeout_retries})"
            continue
        delay = rules.delay(attempt)
        note = ""
        asked = _seconds_asked(failure.get("retry_after"))
        if asked is not None:
            cap = rules.retry_after_max_seconds
            delay = min(asked, cap)
            if asked > cap:
                note = f"; Retry-After {asked:.0f} s capped to {cap:g} s (retry_after_max_seconds)"
                logger.info("%s: Retry-After %.0f s capped to %g s (retry_after_max_seconds)",
                            bounded_error(failure.get("url") or task, 300), asked, cap)
        conn.execute(
            update(crawl_tasks).where(crawl_tasks.c.task_id == task).values(
                status=PENDING, retries_left=retries_left - 1, next_run_at=now + delay,
                timeouts=timeouts + 1 if timed_out else timeouts,
                status_code=failure.get("code"), error_kind=failure.get("kind"),
                error=bounded_error(
                    f"{failure['error']} (retry {attempt + 1} of {total} in {delay:g}s{note})"),
                queued_at=None, deadline_at=None, fetched_at=now, updated_at=now)
        )
        retried.add(task)
    return retried


def _seconds_asked(value: Any) -> float | None:
    """A Retry-After as the fetch stage sent it, as finite seconds at least 0 (None: no advice)."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


def record_outcomes(conn: Connection, outcomes: Iterable[dict[str, Any]], now: float | None = None) -> int:
    """Write the end state of fetched rows. Rows with identical outcomes are updated in
    one statement, so a batch of successful pages costs one round trip. Done rows marked
    auto_recrawl become pending again, due ``age`` seconds from now, in the same statement
    (a second UPDATE of the batch's done rows cost a statement per store batch)."""
    now = time.time() if now is None else now
    groups: dict[tuple, list[str]] = {}
    for outcome in outcomes:
        key = (
            outcome["status"],
            outcome.get("status_code"),
            bounded_error(outcome.get("error")),
            outcome.get("error_kind"),
            outcome.get("final_url"),
            outcome.get("etag"),
            outcome.get("last_modified"),
        )
        groups.setdefault(key, []).append(outcome["task_id"])
    changed = 0
    for (status, status_code, error, error_kind, final_url, etag, last_modified), ids in groups.items():
        assert status in (DONE, FAILED), status
        values = dict(status=status, status_code=status_code, error=error, final_url=final_url,
                      error_kind=(error_kind or "other") if status == FAILED else None,
                      fetched_at=now, deadline_at=None, updated_at=now)
        if status == DONE:
            values["timeouts"] = 0
            recrawl = crawl_tasks.c.auto_recrawl.is_(True)
            values["status"] = case((recrawl, PENDING), else_=DONE)
            values["next_run_at"] = case((recrawl, now + crawl_tasks.c.age), else_=crawl_tasks.c.next_run_at)
        if status == DONE and status_code != 304:
            values.update(etag=etag, last_modified=last_modified)
        result = conn.execute(
            update(crawl_tasks).where(crawl_tasks.c.task_id.in_(ids),
                                      crawl_tasks.c.status == QUEUED).values(**values)
        )
        changed += result.rowcount
    if changed:
        notify_work(conn)  # rows ended: room under the in-queue limit, robots.txt known, or the end
    return changed


def note_queued_error(conn: Connection, ids: Sequence[str], error: str, kind: str,
                      now: float | None = None) -> int:
    """Note why a stage could not finish these queued rows (a parse task that raised), so the
    row says so while it waits for its deadline, and ends with this text should it reach
    ``max_dispatches`` (:func:`crawlcluster.database.claims.fail_over_dispatched`). The rows
    stay queued; returns how many were noted."""
    if not ids:
        return 0
    now = time.time() if now is None else now
    return conn.execute(update(crawl_tasks).where(crawl_tasks.c.task_id.in_(sorted(ids)),
                                                  crawl_tasks.c.status == QUEUED)
                        .values(error=bounded_error(error), error_kind=kind, updated_at=now)).rowcount
