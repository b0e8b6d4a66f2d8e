"""The beat entry: the celery beat Scheduler that runs the dispatcher on every tick.

``beat_scheduler`` in celeryconfig.py names :class:`CrawlScheduler`, so plain
``celery -A crawlcluster beat`` dispatches the crawl frontier besides its own schedule.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery.beat import Scheduler
from sqlalchemy.exc import InterfaceError, OperationalError

from crawlcluster import settings
from crawlcluster.db import get_engine
from crawlcluster.dispatch.dispatcher import Dispatcher
from crawlcluster.dispatch.lease import LeaseLost
from crawlcluster.log_limits import RepeatedErrorLog

logger = logging.getLogger(__name__)


class CrawlScheduler(Scheduler):
    """Celery beat scheduler that also dispatches the crawl frontier on every tick."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.dispatcher = Dispatcher.from_settings(self.app, settings.current())
        self.database_down_since: float | None = None  # while the database cannot be reached
        self.errors = RepeatedErrorLog(logger, settings.current().error_log_seconds)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        beat_wait = super().tick(*args, **kwargs)
        try:
            wait = self.dispatcher.tick()
        except LeaseLost as exc:
            logger.warning("%s; standing by", exc)
            self.dispatcher.lease.token = None
            wait = 1.0
        except (OperationalError, InterfaceError) as exc:  # the database is away: one line per outage
            self._database_down(exc)
            wait = self.dispatcher.tick_seconds
        except Exception:  # noqa: BLE001 - one bad tick must not stop beat; try again
            logger.exception("frontier tick failed; retrying in %ss", self.dispatcher.tick_seconds)
            wait = self.dispatcher.tick_seconds
        else:
            if self.database_down_since is not None:
                logger.warning("database reachable again after %.0fs; dispatching resumes",
                               time.time() - self.database_down_since)
                self.database_down_since = None
                self.errors.clear("database")
            # a leader waits for work notices, woken as soon as a page frees a slot or rows are added
            return self.dispatcher.pause(min(beat_wait, wait))
        return min(beat_wait, wait)

    def _database_down(self, exc: OperationalError | InterfaceError) -> None:
        """Log a database outage as one line when it starts, and one more line per
        ``error_log_seconds`` while it lasts, counting the failed ticks in between (the
        traceback at debug level), until a tick succeeds."""
        if self.database_down_since is None:
            self.database_down_since = time.time()
        self.errors.report("database", "database unreachable for %.0fs (%s: %s); dispatching waits, trying "
                           "again every %ss", time.time() - self.database_down_since, type(exc).__name__,
                           _first_line(exc), self.dispatcher.tick_seconds)
        logger.debug("frontier tick failed", exc_info=exc)

    def close(self) -> None:
        """At a clean shutdown, send what was claimed, then hand the lease over at once
        instead of after it expires."""
        try:
            self.dispatcher.close()
        except (OperationalError, InterfaceError) as exc:  # the outage already said why: one line
            self.errors.report("close", "could not send the last claimed rows (%s); they are sent again "
                               "after their deadline", _first_line(exc), level=logging.WARNING)
        except Exception:  # noqa: BLE001 - logged; unsent rows are re-sent after their deadline
            logger.exception("could not send the last claimed rows")
        try:
            with get_engine(self.dispatcher.database_url).begin() as conn:
                self.dispatcher.lease.release(conn)
        except (OperationalError, InterfaceError) as exc:
            self.errors.report("release", "could not release the scheduler lease (%s); it expires by itself",
                               _first_line(exc), level=logging.WARNING)
        except Exception:  # noqa: BLE001 - shutting down; the lease expires by itself anyway
            logger.exception("could not release the scheduler lease")
        super().close()


def _first_line(exc: BaseException) -> str:
    """The first line of the driver's message (psycopg2 adds hints on the lines after)."""
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
