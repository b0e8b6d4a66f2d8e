"""The step debugger (``/debug``): pick a project (its installed spider) or a spider path, a
URL and a callback; the page is fetched with the workers' fetcher (rendered when asked), the
callback runs as the parse stage runs it, and the page shows the items, the follow-up
requests (each a button that runs it as the next step), the log lines, any traceback and
the page's HTML. It is :func:`workers.trial.try_url`, the code behind ``crawlcluster
parse``; nothing is stored.

No code is edited or run from the browser: only spiders installed beside the console and
inside ``CRAWLCLUSTER_SPIDER_PACKAGES`` load (pyspider's in-page editor was its
remote-code-execution hole, pyspider #964). The URL typed here is trusted by the address
guard as a submitted start URL is; its redirects and whatever else it reaches are not.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from crawlcluster.database import projects as lifecycle
from crawlcluster.db import get_engine
from crawlcluster.errors import CrawlClusterError
from crawlcluster.stages import trial_engine
from crawlcluster.web.common import checked_form, console_of, page

logger = logging.getLogger(__name__)


def _projects(database_url: str | None) -> list[dict[str, Any]]:
    with get_engine(database_url).connect() as conn:
        return [{"name": p["name"], "spider": p["spider"]} for p in lifecycle.all_projects(conn)]


def _run(database_url: str | None, form: dict[str, str]) -> dict[str, Any]:
    """One step: the spider the form names, the URL, the callback; what it gave, or why not."""
    engine = trial_engine()
    load_trial_spider, start_trust, try_url = engine.load_trial_spider, engine.start_trust, engine.try_url

    url = form.get("url", "").strip()
    callback = form.get("callback", "").strip() or None
    project_name = form.get("project", "").strip()
    spider_path = form.get("spider", "").strip() or None
    data: Any = None
    if form.get("data", "").strip():
        try:
            data = json.loads(form["data"])
        except json.JSONDecodeError as exc:
            return {"problem": f"the data is not JSON: {exc}"}
    if not url:
        return {"problem": "give a URL to fetch"}
    project_settings: dict[str, Any] | None = None
    kwargs: dict[str, Any] = {}
    if project_name:
        with get_engine(database_url).connect() as conn:
            project = lifecycle.project_row(conn, project_name)
        if project is None:
            return {"problem": f"no project named {project_name!r}"}
        spider_path = project["spider"]
        project_settings = project["settings"] or {}
        kwargs = dict(project_settings.get("spider_kwargs") or {})
    trust = start_trust(url) + list((project_settings or {}).get("allow_private") or [])
    try:
        # only from CRAWLCLUSTER_SPIDER_PACKAGES, as a worker loads it (never the browser's choice)
        spider = load_trial_spider(spider_path, allow_named=False, kwargs=kwargs, url=url)
    except CrawlClusterError as exc:
        return {"problem": str(exc)}
    render = True if form.get("render") else None
    depth = int(form["depth"]) if form.get("depth", "").isdigit() else 0
    result = try_url(spider, url, callback=callback, data=data, render=render, depth=depth, trust=trust,
                     project_settings=project_settings)
    logger.info("console: step %s %s on %s: %d items, %d requests%s", type(spider).__name__, result.callback,
                result.url, len(result.items), len(result.requests), ", raised" if result.error else "")
    # each follow-up as the next step's form sends it (its data as JSON text, escaped by the template)
    steps = [{**r, "data_json": json.dumps(r["data"], default=str) if r["data"] is not None else ""}
             for r in result.requests]
    return {"result": result, "steps": steps, "spider_name": type(spider).__name__}


async def debug_page(request: Request) -> Response:
    console = console_of(request)
    projects = await run_in_threadpool(_projects, console.database_url)
    keys = ("project", "spider", "url", "callback", "data")
    form = {key: request.query_params.get(key, "") for key in keys}
    return page(request, "debug.html", {"projects": projects, "form": form, "result": None})


async def debug_run(request: Request) -> Response:
    """POST: run one step (the CSRF check first, as every console action)."""
    form, refused = await checked_form(request)
    if refused:
        return refused
    console = console_of(request)
    projects = await run_in_threadpool(_projects, console.database_url)
    outcome = await run_in_threadpool(_run, console.database_url, form)
    status = 400 if "problem" in outcome else 200
    return page(request, "debug.html", {"projects": projects, "form": form, "result": outcome.get("result"),
                                        "problem": outcome.get("problem"), "steps": outcome.get("steps", []),
                                        "spider_name": outcome.get("spider_name")}, status_code=status)


routes = [
    Route("/debug", debug_page, methods=["GET"]),
    Route("/debug", debug_run, methods=["POST"]),
]
