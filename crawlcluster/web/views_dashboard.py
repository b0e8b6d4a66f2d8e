"""The dashboard (``/``): one row per project, the pipeline strip and the scheduler's health,
refreshed by ``/api/dashboard``; and the actions it offers, each a POST: pause, resume,
cancel, run again, and the rate and burst edited in place.

The actions go through the client API (:class:`crawlcluster.Crawl`) and the project state
machine (:mod:`crawlcluster.database.projects`), as the CLI's verbs do: the console adds no
way of changing a project that the CLI lacks.
"""

from __future__ import annotations

import logging
import time

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from crawlcluster.client import Crawl
from crawlcluster.database import projects as lifecycle
from crawlcluster.database import tasks
from crawlcluster.db import get_engine
from crawlcluster.errors import CrawlClusterError, ProjectNotFound
from crawlcluster.web import figures
from crawlcluster.web.common import back, checked_form, console_of, page

logger = logging.getLogger(__name__)

ACTIONS = ("pause", "resume", "cancel", "run-again")


def _dashboard(request: Request) -> dict:
    console = console_of(request)
    return figures.dashboard(console.database_url, console.broker_url, console.key_prefix, console.consumers)


async def dashboard_page(request: Request) -> Response:
    return page(request, "dashboard.html", await run_in_threadpool(_dashboard, request))


async def dashboard_json(request: Request) -> Response:
    return JSONResponse(await run_in_threadpool(_dashboard, request),
                        headers={"cache-control": "no-store"})


def run_again(crawl: Crawl) -> int:
    """Re-seed: the project's start rows (depth 0) that ended become due now and the project
    runs; done pages are fetched again only when their own age says so (their links are
    already rows). Returns how many start rows were re-opened."""
    now = time.time()
    with get_engine(crawl.database_url).begin() as conn:
        if lifecycle.project_row(conn, crawl.project) is None:
            raise ProjectNotFound(crawl.project)
        reopened = tasks.reopen_start_rows(conn, crawl.project, 0.0, now)
        lifecycle.run_again(conn, crawl.project, now)
    return reopened


def _act(crawl: Crawl, verb: str) -> None:
    if verb == "pause":
        crawl.pause()
    elif verb == "resume":
        crawl.resume()
    elif verb == "cancel":
        crawl.cancel()
    else:
        run_again(crawl)
    logger.info("console: %s %s", verb, crawl.project)


async def project_action(request: Request) -> Response:
    form, refused = await checked_form(request)
    if refused:
        return refused
    name, verb = request.path_params["name"], request.path_params["verb"]
    if verb not in ACTIONS:
        return page(request, "message.html", {"title": "unknown action",
                                              "message": f"{verb!r} is not one of {', '.join(ACTIONS)}"}, 404)
    crawl = Crawl(name, database_url=console_of(request).database_url)
    try:
        await run_in_threadpool(_act, crawl, verb)
    except CrawlClusterError as exc:
        return page(request, "message.html", {"title": f"{verb} {name}", "message": str(exc)}, 400)
    return back(request)


def _limit(value: str | None) -> float | None:
    """A rate or burst as typed: empty means no limit (None)."""
    text = (value or "").strip()
    return None if text in ("", "-") else float(text)


async def project_limits(request: Request) -> Response:
    form, refused = await checked_form(request)
    if refused:
        return refused
    name = request.path_params["name"]
    crawl = Crawl(name, database_url=console_of(request).database_url)
    try:
        values = {"rate": _limit(form.get("rate")), "burst": _limit(form.get("burst"))}
        await run_in_threadpool(lambda: crawl.configure(**values))
    except ValueError:
        message = "rate and burst must be numbers (empty: no limit)"
        return page(request, "message.html", {"title": f"limits of {name}", "message": message}, 400)
    except CrawlClusterError as exc:
        return page(request, "message.html", {"title": f"limits of {name}", "message": str(exc)}, 400)
    logger.info("console: %s rate=%s burst=%s", name, values["rate"], values["burst"])
    return back(request)


routes = [
    Route("/", dashboard_page, methods=["GET"]),
    Route("/api/dashboard", dashboard_json, methods=["GET"]),
    Route("/projects/{name}/action/{verb}", project_action, methods=["POST"]),
    Route("/projects/{name}/limits", project_limits, methods=["POST"]),
]
