"""render="auto" in the parse stage: pick out the fetched pages that need a browser.

A page fetched for a ``render="auto"`` row is shown to the spider's ``needs_render(response)``
before any callback runs. When it says yes, the page is not parsed: the same row (same task
id, still queued) goes to the render queue, and its host is remembered in ``render_hosts``
so the scheduler sends the host's later rows straight to render.
"""

from __future__ import annotations

import logging

from sqlalchemy.engine import Engine

from crawlcluster.errors import ConfigurationError, ProjectNotFound
from crawlcluster.http import Response
from crawlcluster.messages import FetchEntry, Page, decompress_body, page_entry
from crawlcluster.rendering import remember_render_host
from crawlcluster.urls import url_host
from workers.parser import project_context

logger = logging.getLogger(__name__)

def _is_candidate(page: Page) -> bool:
    return ((page.get("fetch") or {}).get("render") == "auto" and not page.get("rendered")
            and "redirect" not in page and page.get("code") is not None)


def split_for_render(engine: Engine, project: str, pages: list[Page]) -> tuple[list[FetchEntry], list[Page]]:
    """``(render entries, pages to parse)``: the render entries are the pages whose spider's
    ``needs_render`` said yes, as render message entries; every other page is returned
    untouched, in order."""
    if not any(_is_candidate(page) for page in pages):
        return [], pages
    try:
        spider = project_context(engine, project).spider
    except (ConfigurationError, ProjectNotFound):
        return [], pages  # the parse stage reports it on every page
    to_render: list[FetchEntry] = []
    keep: list[Page] = []
    hosts: dict[str, str] = {}
    for page in pages:
        if not _is_candidate(page):
            keep.append(page)
            continue
        response = Response(page["url"], page["code"], page.get("headers") or {}, decompress_body(page),
                            data=page.get("data"), depth=page.get("depth", 0))
        try:
            needed = bool(spider.needs_render(response))
        except Exception:  # noqa: BLE001 - a broken hook means "parse it as fetched"
            logger.exception("%s.needs_render raised on %s; parsing the page as fetched",
                             type(spider).__name__, page["url"])
            needed = False
        if needed:
            to_render.append(page_entry(page))
            hosts.setdefault(url_host(page["url"]), page["url"])
        else:
            keep.append(page)
    if hosts:
        reason = f"{type(spider).__name__}.needs_render"
        with engine.begin() as conn:
            for host, url in hosts.items():
                remember_render_host(conn, project, host, url, reason)
    return to_render, keep
