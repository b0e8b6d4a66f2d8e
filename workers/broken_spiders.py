"""A project whose spider cannot be loaded on the workers: stopped once, not retried in a loop.

A spider path outside ``CRAWLCLUSTER_SPIDER_PACKAGES``, or a module that fails to import
(an exception, a missing module, ``SystemExit``), can never run its callbacks, so sending
its rows again would only repeat the failure. The first parse worker that meets it pauses
the project with the reason as its ``pause_reason`` (the scheduler dispatches nothing more
of it, housekeeping never resumes it) and ends its open pages failed with the same sentence
in one transaction; the guarded pause makes that happen once across the cluster. Each
worker process also remembers the failure for a few seconds, so the pages already in
flight fail as they arrive without importing the module again and without a log line each.
"""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy.engine import Engine

from crawlcluster.database import projects as lifecycle
from crawlcluster.database import tasks

logger = logging.getLogger(__name__)

SPIDER_FAILURE_KIND = "spider"
REMEMBER_SECONDS = 5.0  # as long as a loaded spider is cached (workers.parser)

_failures: dict[str, tuple[float, str]] = {}
_lock = threading.Lock()


def remembered_failure(project: str) -> str | None:
    """The load failure of ``project``'s spider this process met in the last few seconds."""
    known = _failures.get(project)
    if known is None or time.monotonic() - known[0] > REMEMBER_SECONDS:
        return None
    return known[1]


def stop_project(engine: Engine, project: str, error: str, keep_ids: list[str]) -> bool:
    """Pause ``project`` with ``error`` and fail its open pages but ``keep_ids`` (the batch in
    hand, which the caller fails through its outcomes). True for the call that paused it;
    later calls (this worker or another one) change nothing and log nothing."""
    with _lock:
        _failures[project] = (time.monotonic(), error)
    reason = (f"{error}. Fix it on the workers, then `crawlcluster retry {project} --failed` "
              f"(or resume the project)")
    with engine.begin() as conn:
        paused = lifecycle.pause_for(conn, project, reason)
        failed = tasks.fail_open_rows(conn, project, SPIDER_FAILURE_KIND, error, keep_ids) if paused else 0
    if paused:
        logger.error("project %s paused: %s; %d open pages failed", project, error, failed + len(keep_ids))
    return paused
