"""A project's page (``/projects/NAME``: its hosts, its failures grouped by kind with a retry
button per group, a search over its URLs) and a URL's page (``/projects/NAME/urls/TASK_ID``:
the row whole, its items, and why it is not fetched yet).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from crawlcluster import settings, stats
from crawlcluster.client import Crawl
from crawlcluster.database import console as console_rows
from crawlcluster.database import failures
from crawlcluster.database import projects as lifecycle
from crawlcluster.db import get_engine
from crawlcluster.dispatch.limits import HostSlots
from crawlcluster.errors import CrawlClusterError
from crawlcluster.overview import project_stats
from crawlcluster.schema import DONE, FAILED, PENDING, QUEUED
from crawlcluster.web.common import back, checked_form, console_of, not_found, page
from crawlcluster.web.figures import human_bytes
from crawlcluster.web.why import not_fetched_because

logger = logging.getLogger(__name__)

# failed URLs shown under each kind of failure
SAMPLE_URLS = 5
# URLs a search lists, at most
SEARCH_ROWS = 100
# items shown on a URL's page, at most
URL_ITEMS = 50


def _host_table(conn: Any, project: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per host of ``project``: pages by state, cost, in flight, delay, robots.txt."""
    s = settings.current()
    name = project["name"]
    states = console_rows.host_states(conn, name)
    costs = {row["host"]: row for row in stats.host_figures(conn, name)}
    names = sorted(set(states) | set(costs))
    robots = console_rows.robots_of_hosts(conn, names)
    slots = HostSlots(s.per_host_concurrency, s.per_host_delay_seconds)
    table = []
    for host in names:
        counts = states.get(host, {})
        cost = costs.get(host, {})
        robot = robots.get(host) or {}
        slot = slots.slot(host, project["settings"] or {}, robot.get("crawl_delay"), {})
        table.append({
            "host": host, "pages": sum(v for k, v in counts.items() if k != "in_flight"),
            "done": counts.get(DONE, 0), "failed": counts.get(FAILED, 0),
            "pending": counts.get(PENDING, 0), "queued": counts.get(QUEUED, 0),
            "in_flight": counts.get("in_flight", 0), "max_in_flight": slot.max_in_flight,
            "bytes": human_bytes(cost.get("bytes", 0)), "fetch_seconds": cost.get("fetch_seconds", 0.0),
            "browser_seconds": cost.get("browser_seconds", 0.0), "delay": slot.delay_seconds,
            "rendered_share": cost.get("rendered_share", 0.0),
            "robots": robot.get("robots_status", "unknown"), "robots_error": robot.get("robots_error"),
        })
    return sorted(table, key=lambda h: (-h["pages"], h["host"]))


def _project_context(database_url: str | None, name: str, query: str) -> dict[str, Any] | None:
    s = settings.current()
    with get_engine(database_url).connect() as conn:
        project = lifecycle.project_row(conn, name)
        if project is None:
            return None
        groups = failures.failure_groups(conn, name, SAMPLE_URLS)
        found, complete = (console_rows.search_urls(conn, name, query, SEARCH_ROWS, s.web_search_scan_rows)
                           if query else (None, True))
        hosts = _host_table(conn, project)
        # what the page shows of Crawl.stats(): counts, status and why it waits (no windows,
        # no end-of-crawl figures, whose failure counts the groups above already read)
        figures = project_stats(conn, [project], figures=False)[name]
    return {"project": project, "stats": figures, "hosts": hosts, "groups": groups, "query": query,
            "found": found, "search_limit": SEARCH_ROWS,
            "search_complete": complete, "search_scan_rows": s.web_search_scan_rows}


async def project_page(request: Request) -> Response:
    name = request.path_params["name"]
    query = (request.query_params.get("q") or "").strip()
    context = await run_in_threadpool(_project_context, console_of(request).database_url, name, query)
    if context is None:
        return not_found(request, f"no project named {name!r}")
    return page(request, "project.html", context)


async def retry_group(request: Request) -> Response:
    """POST: the failed rows of one kind (as ``crawlcluster retry --failed --kind`` takes it)
    become pending, due now, with fresh retries; the project runs again."""
    form, refused = await checked_form(request)
    if refused:
        return refused
    name = request.path_params["name"]
    kind = form.get("kind") or None
    crawl = Crawl(name, database_url=console_of(request).database_url)
    try:
        count = await run_in_threadpool(crawl.retry_failed, kind)
    except CrawlClusterError as exc:
        return page(request, "message.html", {"title": f"retry {name}", "message": str(exc)}, 400)
    logger.info("console: %s: %d failed rows of kind %s due again", name, count, kind or "any")
    return back(request, f"/projects/{name}")


def _url_context(database_url: str | None, name: str, task_id: str) -> dict[str, Any] | None:
    now = time.time()
    with get_engine(database_url).connect() as conn:
        row = console_rows.task_row(conn, task_id)
        project = lifecycle.project_row(conn, name)
        if row is None or project is None or row["project"] != name:
            return None
        items = console_rows.items_of_task(conn, task_id, URL_ITEMS)
        why = not_fetched_because(conn, row, project, settings.current(), now)
    fetch = row.get("fetch") or {}
    headers = {k.lower(): v for k, v in (fetch.get("headers") or {}).items()}
    return {"project": project, "row": row, "items": items, "items_limit": URL_ITEMS, "why": why,
            "referrer": headers.get("referer"), "now": now,
            "kind": (failures.failure_label(row["error_kind"], row["status_code"])
                     if row["error_kind"] else None)}


async def url_page(request: Request) -> Response:
    name, task_id = request.path_params["name"], request.path_params["task_id"]
    context = await run_in_threadpool(_url_context, console_of(request).database_url, name, task_id)
    if context is None:
        return not_found(request, f"no URL {task_id!r} in project {name!r}")
    return page(request, "url.html", context)


routes = [
    Route("/projects/{name}", project_page, methods=["GET"]),
    Route("/projects/{name}/retry", retry_group, methods=["POST"]),
    Route("/projects/{name}/urls/{task_id}", url_page, methods=["GET"]),
]


