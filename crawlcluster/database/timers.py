"""Timers (``project_timers``): a spider's ``@every`` methods and a crawl's re-seeding,
claimed by beat when due and set by submit and ``Crawl.schedule``.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from crawlcluster.db import upsert
from crawlcluster.schema import (
    FINISHED,
    RUNNING,
    project_timers,
    projects,
)

logger = logging.getLogger(__name__)


def claim_due_timers(conn: Connection, now: float | None = None) -> list[tuple[str, str]]:
    """(project, timer) pairs whose interval has passed, of projects not paused or
    cancelled; their last run is set to now before they are sent."""
    now = time.time() if now is None else now
    due = conn.execute(
        select(project_timers.c.project, project_timers.c.name)
        .join(projects, projects.c.name == project_timers.c.project)
        .where(projects.c.status.in_((RUNNING, FINISHED)),
               project_timers.c.last_run_at + project_timers.c.interval_seconds <= now)
        .with_for_update(of=project_timers, skip_locked=True)
    ).all()
    for project, name in due:
        conn.execute(update(project_timers).where(project_timers.c.project == project,
                                                  project_timers.c.name == name)
                     .values(last_run_at=now))
    return [(project, name) for project, name in due]


def set_timer(conn: Connection, project: str, name: str, interval_seconds: float,
              now: float | None = None) -> None:
    """Create or change a timer; its first run is one interval from now."""
    now = time.time() if now is None else now
    values = {"project": project, "name": name, "interval_seconds": interval_seconds, "last_run_at": now,
              "created_at": now}
    conn.execute(upsert(conn, project_timers, values, key=["project", "name"],
                        update={"interval_seconds": interval_seconds}))


def timer_interval(conn: Connection, project: str, name: str) -> float | None:
    """Seconds between two runs of ``project``'s timer ``name``, None when it has none."""
    return conn.execute(select(project_timers.c.interval_seconds).where(
        project_timers.c.project == project, project_timers.c.name == name)).scalar()
