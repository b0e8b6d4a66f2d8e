"""A ``Request`` as the crawl_tasks row that holds it: the API side of the frontier.

A row's scheduling options are resolved here (:mod:`crawlcluster.scheduling`: request,
callback ``@config``, spider, project, cluster), so that the database layer stores plain
rows and imports neither ``Request`` nor ``Spider``.
"""

from __future__ import annotations

from typing import Any, Iterable

from crawlcluster import scheduling
from crawlcluster.schema import PENDING
from crawlcluster.spider_settings import request_defaults
from crawlcluster.urls import normalize_url, task_id, url_host


def task_row(project: str, url: str, request: Any, *, spider: Any, project_settings: dict[str, Any] | None,
             depth: int, now: float, fetch_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The crawl_tasks row for a normalised ``url`` requested by ``request``, its scheduling
    options resolved (request, then callback @config, spider, project, cluster default)."""
    callback_name = request.callback_name()
    schedule = scheduling.resolve(request, getattr(spider, callback_name, None), spider, project_settings)
    values = schedule.row_values()
    if fetch_options is None:  # a new request: the project's (else spider's) user agent, headers, timeout
        options = dict(request.fetch_options() or {})
        request_defaults(options, spider, project_settings)
    else:  # a redirect's next hop keeps the options of its first
        options = dict(fetch_options)
    options.update(values.pop("_fetch_extra"))
    row = {
        "task_id": task_id(project, url, options.get("method", "GET"), options.get("body")),
        "project": project,
        "url": url,
        "host": url_host(url),
        "status": PENDING,
        "depth": depth,
        "callback": callback_name,
        "fetch": options or None,
        "data": request.data,
        "next_run_at": max(now, request.exetime or now),
        "created_at": now,
        "updated_at": now,
        **values,
    }
    if request.force_update:
        row["_force"] = True
    if request.cancel:
        row["_cancel"] = True
    return row



def seed_rows(project: str, requests: Iterable[Any], spider: Any, project_settings: dict[str, Any] | None,
              now: float) -> list[dict[str, Any]]:
    """The rows of a submit's start requests (depth 0), their URLs normalised."""
    return [task_row(project, normalize_url(r.url), r, spider=spider, project_settings=project_settings,
                     depth=0, now=now) for r in requests]
