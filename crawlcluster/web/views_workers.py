"""The workers page (``/workers``): every Celery worker with its queues, concurrency, tasks
and heartbeat, every worker process's lease, and every render process's browser counters;
refreshed by its script from ``/workers/live`` (the same tables, as HTML) and readable as
JSON at ``/api/workers``. The figures are :mod:`crawlcluster.web.workers`'.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from crawlcluster.web.common import SECURITY_HEADERS, console_of, page, templates
from crawlcluster.web.workers import workers_page


def _figures(request: Request) -> dict:
    console = console_of(request)
    return workers_page(console.database_url, console.workers, console.leases)


async def workers_html(request: Request) -> Response:
    return page(request, "workers.html", await run_in_threadpool(_figures, request))


async def workers_live(request: Request) -> Response:
    """The page's tables alone, for its script to swap in without reloading."""
    figures = await run_in_threadpool(_figures, request)
    response = templates.TemplateResponse(request, "_workers.html", figures)
    response.headers.update({**SECURITY_HEADERS, "cache-control": "no-store"})
    return response


async def workers_json(request: Request) -> Response:
    return JSONResponse(await run_in_threadpool(_figures, request), headers={"cache-control": "no-store"})


routes = [
    Route("/workers", workers_html, methods=["GET"]),
    Route("/workers/live", workers_live, methods=["GET"]),
    Route("/api/workers", workers_json, methods=["GET"]),
]
