"""The beat entry: the celery beat Scheduler that runs the dispatcher on every tick.

``beat_scheduler`` in celeryconfig.py names :class:`CrawlScheduler`, so plain
``celery -A crawlcluster beat`` dispatches the crawl frontier besides its own schedule.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.beat import Scheduler

from crawlcluster import settings
from crawlcluster.db import get_engine
from crawlcluster.dispatch.dispatcher import Dispatcher
from crawlcluster.dispatch.lease import LeaseLost

logger = logging.getLogger(__name__)


class CrawlScheduler(Scheduler):
    """Celery beat scheduler that also dispatches the crawl frontier on every tick."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.dispatcher = Dispatcher.from_settings(self.app, settings.current())

    def tick(self, *args: Any, **kwargs: Any) -> float:
        beat_wait = super().tick(*args, **kwargs)
        try:
            wait = self.dispatcher.tick()
        except LeaseLost as exc:
            logger.warning("%s; standing by", exc)
            self.dispatcher.lease.token = None
            wait = 1.0
        except Exception:  # noqa: BLE001 - a database outage must not stop beat; try again
            logger.exception("frontier tick failed; retrying in %ss", self.dispatcher.tick_seconds)
            wait = self.dispatcher.tick_seconds
        return min(beat_wait, wait)

    def close(self) -> None:
        """At a clean shutdown, send what was claimed, then hand the lease over at once
        instead of after it expires."""
        try:
            self.dispatcher.close()
        except Exception:  # noqa: BLE001 - logged; unsent rows are re-sent after their deadline
            logger.exception("could not send the last claimed rows")
        try:
            with get_engine(self.dispatcher.database_url).begin() as conn:
                self.dispatcher.lease.release(conn)
        except Exception:  # noqa: BLE001 - shutting down; the lease expires by itself anyway
            logger.exception("could not release the scheduler lease")
        super().close()
