"""The frontier scheduler: each tick claims due rows from crawl_tasks and publishes them.

It runs inside ``celery -A crawlcluster beat`` (``beat_scheduler`` in celeryconfig.py
names :class:`CrawlScheduler`) and, unchanged, inside the embedded crawl. One tick claims
a bounded batch per running project (highest priority first), marks the rows queued with
a deadline *before* publishing them, sends them in batches to the fetch queue (render rows
to the render queue), re-sends rows whose deadline passed (their message was lost), and
marks projects with nothing pending or queued as finished.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.beat import Scheduler

from crawlcluster import frontier, settings
from crawlcluster.db import get_engine
from crawlcluster.messages import fetch_messages

logger = logging.getLogger(__name__)


class Dispatcher:
    """Moves due rows from the task table to the broker, one bounded tick at a time."""

    def __init__(
        self,
        app: Celery,
        *,
        claim_batch_size: int,
        max_queued_per_project: int,
        queued_deadline_seconds: float,
        fetch_batch_size: int,
        tick_seconds: float,
        database_url: str | None = None,
    ) -> None:
        self.app = app
        self.claim_batch_size = claim_batch_size
        self.max_queued_per_project = max_queued_per_project
        self.queued_deadline_seconds = queued_deadline_seconds
        self.fetch_batch_size = fetch_batch_size
        self.tick_seconds = tick_seconds
        self.database_url = database_url
        self.published_total = 0
        self.resent_total = 0

    @classmethod
    def from_settings(cls, app: Celery) -> "Dispatcher":
        return cls(
            app,
            claim_batch_size=settings.get("claim_batch_size"),
            max_queued_per_project=settings.get("max_queued_per_project"),
            queued_deadline_seconds=settings.get("queued_deadline_seconds"),
            fetch_batch_size=settings.get("fetch_batch_size"),
            tick_seconds=settings.get("tick_seconds"),
        )

    def tick(self) -> float:
        """Claim and publish one bounded batch; return the seconds until the next tick is
        worth running (0 when a full batch was sent and more is probably due)."""
        engine = get_engine(self.database_url)
        with engine.connect() as conn:
            running = frontier.running_projects(conn)
        share = max(self.fetch_batch_size, self.claim_batch_size // max(1, len(running)))
        published = 0
        saturated = False
        for project in running:
            name = project["name"]
            limit = project["queue_limit"] or self.max_queued_per_project
            with engine.begin() as conn:
                room = min(share, limit - frontier.count_queued(conn, name))
                rows = frontier.claim_due_tasks(conn, name, room, self.queued_deadline_seconds)
                if not rows and room > 0 and not frontier.has_open_tasks(conn, name):
                    if frontier.mark_finished(conn, name):
                        logger.info("project %s finished", name)
            if rows:
                self.publish(name, rows)
                published += len(rows)
                saturated = saturated or len(rows) == room
        published += self.resend_stale(engine)
        self.published_total += published
        if saturated:
            return 0.0
        return 0.05 if published else self.tick_seconds

    def resend_stale(self, engine: Any) -> int:
        with engine.begin() as conn:
            rows = frontier.reclaim_stale_tasks(conn, self.claim_batch_size, self.queued_deadline_seconds)
        by_project: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_project.setdefault(row["project"], []).append(row)
        for project, project_rows in by_project.items():
            logger.warning("re-sending %d rows of %s queued past their deadline", len(project_rows), project)
            self.publish(project, project_rows)
        self.resent_total += len(rows)
        return len(rows)

    def route(self, project: str, row: dict[str, Any]) -> str:
        """The task (and so the queue) a claimed row is sent to: render rows to the browser
        tier, the rest to fetch."""
        if (row.get("fetch") or {}).get("render") is True:
            return "crawlcluster.render"
        return "crawlcluster.fetch"

    def publish(self, project: str, rows: list[dict[str, Any]]) -> None:
        """Send claimed rows in batches; a failed send is logged and left to the deadline."""
        by_task: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_task.setdefault(self.route(project, row), []).append(row)
        try:
            with self.app.producer_or_acquire() as producer:
                for task_name, stage_rows in by_task.items():
                    for message in fetch_messages(project, stage_rows, self.fetch_batch_size):
                        self.app.send_task(task_name, args=[message], producer=producer)
        except Exception:  # noqa: BLE001 - the rows are queued with a deadline; they will be re-sent
            logger.exception("could not publish %d rows of %s; they will be re-sent after %ss",
                             len(rows), project, self.queued_deadline_seconds)


class CrawlScheduler(Scheduler):
    """Celery beat scheduler that also dispatches the crawl frontier on every tick."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.dispatcher = Dispatcher.from_settings(self.app)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        beat_wait = super().tick(*args, **kwargs)
        try:
            wait = self.dispatcher.tick()
        except Exception:  # noqa: BLE001 - a database outage must not stop beat; try again
            logger.exception("frontier tick failed; retrying in %ss", self.dispatcher.tick_seconds)
            wait = self.dispatcher.tick_seconds
        return min(beat_wait, wait)
