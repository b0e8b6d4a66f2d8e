"""Spider code that beat asks for outside of pages: ``on_finished`` and timers.

Beat never runs spider code itself (it need not have the spiders installed); it sends a
message to the parse queue, where the spiders live, and these functions run it there.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlalchemy.engine import Engine

from crawlcluster.database import projects as lifecycle
from crawlcluster.database import tasks, timers
from crawlcluster.database.counts import count_by_status, has_open_tasks
from crawlcluster.errors import ConfigurationError, InvalidURL
from crawlcluster.request_rows import task_row
from crawlcluster.scheduling import EVERY_ATTR
from crawlcluster.spider import Request
from crawlcluster.submission import start_hosts
from crawlcluster.urls import normalize_url
from workers.broken_spiders import stop_project
from workers.parser import ProjectContext, project_context

logger = logging.getLogger(__name__)

RESEED_TIMER = "__reseed__"


def _loaded(engine: Engine, project: str, hook: str) -> ProjectContext | None:
    """The project's spider, or None when it cannot be loaded here (outside
    CRAWLCLUSTER_SPIDER_PACKAGES, or its import fails): the project stops as its pages would
    (:mod:`workers.broken_spiders`) and the hook does nothing, without a traceback."""
    try:
        return project_context(engine, project)
    except ConfigurationError as exc:
        if not stop_project(engine, project, str(exc), []):
            logger.warning("project %s: %s not run: %s", project, hook, exc)
        return None


def run_on_finished(engine: Engine, project: str) -> bool:
    """Call the spider's ``on_finished(stats)`` once the scheduler marked the project finished."""
    context = _loaded(engine, project, "on_finished")
    if context is None:
        return False
    with engine.connect() as conn:
        stats: dict[str, Any] = count_by_status(conn, project)
    try:
        context.spider.on_finished(stats)
    except Exception:  # noqa: BLE001 - a hook's bug is logged, never a crash
        logger.exception("%s.on_finished raised", type(context.spider).__name__)
        return False
    return True


def run_timer(engine: Engine, project: str, timer: str) -> int:
    """Run a timer of ``project``: an ``@every`` method of its spider, or the re-seeding of
    its start URLs; add the requests it yields and reopen a finished project if any are due.
    Known URLs whose ``age`` has not passed are not crawled again."""
    context = _loaded(engine, project, f"timer {timer}")
    if context is None:
        return 0
    spider = context.spider
    with engine.connect() as conn:
        interval = timers.timer_interval(conn, project, timer)
    if timer == RESEED_TIMER:
        produced = spider.start()
    else:
        method = getattr(spider, timer, None)
        if method is None or getattr(method, EVERY_ATTR, None) is None:
            logger.error("project %s has a timer %r but its spider has no such @every method", project, timer)
            return 0
        produced = method()
    now = time.time()
    rows = []
    requests: list[Request] = []
    for request in produced or ():
        if isinstance(request, str):
            request = Request(request)
        if not isinstance(request, Request):
            continue
        if timer == RESEED_TIMER and request.age is None and interval:
            request.age = int(interval)  # a start URL is due again once per interval
        try:
            url = normalize_url(request.url)
        except InvalidURL as exc:
            logger.warning("timer %s of %s yielded %s", timer, project, exc)
            continue
        requests.append(request)
        rows.append(task_row(project, url, spider.with_defaults(request), spider=spider,
                             project_settings=context.settings, depth=0, now=now))
    with engine.begin() as conn:
        # a timer's requests are the spider's own, like its start requests, not found on a
        # page a site controls: their hosts are trusted by the address guard as start hosts are
        lifecycle.trust_start_hosts(conn, project, start_hosts(requests, None), now)
        added = tasks.insert_tasks(conn, project, rows, max_pages=context.max_pages)
        if timer == RESEED_TIMER and interval:
            # the start rows of a URL-only submission live only in the table: open them again
            tasks.reopen_start_rows(conn, project, interval, now)
        if has_open_tasks(conn, project):
            lifecycle.reopen_finished(conn, project, now)
    logger.info("timer %s of %s: %d requests, %d new", timer, project, len(rows), added)
    return len(rows)
