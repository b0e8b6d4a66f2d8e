"""A ``Request`` as the crawl_tasks row that holds it: the API side of the frontier.

A row's scheduling options are resolved here (:mod:`crawlcluster.scheduling`: request,
callback ``@config``, spider, project, cluster), so that the database layer stores plain
rows and imports neither ``Request`` nor ``Spider``.
"""

from __future__ import annotations

from typing import Any, Iterable

from crawlcluster import scheduling, settings
from crawlcluster.errors import InvalidURL
from crawlcluster.schema import PENDING
from crawlcluster.spider_settings import request_defaults
from crawlcluster.urls import host_problem, length_problem, normalize_url, task_id, url_host


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
    """The rows of a submit's start requests (depth 0), their URLs normalised. A URL longer
    than max_url_length, or whose host cannot be a DNS name, is refused (:class:`InvalidURL`,
    which shows the URL's start and its length), as such a link would be dropped."""
    rows = []
    max_url_length = settings.current().max_url_length
    for request in requests:
        url = normalize_url(request.url)
        problem = length_problem(url, max_url_length) or host_problem(url)
        if problem is not None:
            raise InvalidURL(url, f"{problem}; such a URL is not crawled")
        rows.append(task_row(project, url, request, spider=spider, project_settings=project_settings,
                             depth=0, now=now))
    return rows
