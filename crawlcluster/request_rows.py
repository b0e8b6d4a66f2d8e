"""A ``Request`` as the crawl_tasks row that holds it: the API side of the frontier.

A row's scheduling options are resolved here (:mod:`crawlcluster.scheduling`: request,
callback ``@config``, spider, project, cluster), so that the database layer stores plain
rows and imports neither ``Request`` nor ``Spider``.
"""

from __future__ import annotations

from typing import Any, Iterable

from crawlcluster import scheduling, settings
from crawlcluster.errors import InvalidURL
from crawlcluster.http import Request
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
    return _row(project, url, request, depth, now, callback_name, options or None, values)


def _row(project: str, url: str, request: Any, depth: int, now: float, callback_name: str,
         options: dict[str, Any] | None, values: dict[str, Any]) -> dict[str, Any]:
    """The row itself, its fetch ``options`` and scheduling ``values`` resolved."""
    row = {
        "task_id": task_id(project, url, (options or {}).get("method", "GET"), (options or {}).get("body")),
        "project": project,
        "url": url,
        "host": url_host(url),
        "status": PENDING,
        "depth": depth,
        "callback": callback_name,
        "fetch": options,
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


# a Request's own scheduling options: a request that sets none of them (and no fetch option)
# gets its callback's resolved options, the same for every such link of a page
_SCHEDULING_FIELDS = ("retries", "retry_delays", "retry_policy", "age", "itag", "auto_recrawl", "exetime")
_FETCH_FIELDS = ("headers", "cookies", "body", "timeout", "render")


def _plain_request(request: Any) -> bool:
    """Whether ``request`` sets nothing but its URL, callback and data (most links)."""
    if type(request).fetch_options is not Request.fetch_options or request.priority \
            or request.force_update or request.cancel or request.method.upper() != "GET":
        return False
    return all(getattr(request, name) is None for name in _SCHEDULING_FIELDS) \
        and not any(getattr(request, name) for name in _FETCH_FIELDS)


class RowMaker:
    """:func:`task_row` for the many links of a batch of one project: a plain request's
    scheduling and default fetch options are resolved once per callback, and
    :meth:`plain_id` gives the task id of a link whose row would be plain (no itag, age,
    force or cancel), so a caller can skip a link it knows before building its row."""

    def __init__(self, project: str, spider: Any, project_settings: dict[str, Any] | None,
                 now: float) -> None:
        self.project, self.spider, self.project_settings, self.now = project, spider, project_settings, now
        self._resolved: dict[str, tuple[dict[str, Any], dict[str, Any], bool]] = {}

    def _for_callback(self, request: Any, callback_name: str) -> tuple[dict[str, Any], dict[str, Any], bool]:
        found = self._resolved.get(callback_name)
        if found is None:
            schedule = scheduling.resolve(request, getattr(self.spider, callback_name, None), self.spider,
                                          self.project_settings)
            values = schedule.row_values()
            options: dict[str, Any] = {}
            request_defaults(options, self.spider, self.project_settings)
            options.update(values.pop("_fetch_extra"))
            plain = values["itag"] is None and values["age"] is None
            found = self._resolved[callback_name] = (values, options, plain)
        return found

    def plain_id(self, url: str, request: Any) -> str | None:
        """The task id of ``url``'s row when the row would be plain, else None."""
        if not _plain_request(request):
            return None
        _values, options, plain = self._for_callback(request, request.callback_name())
        if not plain:
            return None
        return task_id(self.project, url, options.get("method", "GET"), options.get("body"))

    def row(self, url: str, request: Any, depth: int, fetch_options: dict[str, Any] | None = None
            ) -> dict[str, Any]:
        if fetch_options is not None or not _plain_request(request):
            return task_row(self.project, url, request, spider=self.spider,
                            project_settings=self.project_settings, depth=depth, now=self.now,
                            fetch_options=fetch_options)
        callback_name = request.callback_name()
        values, options, _plain = self._for_callback(request, callback_name)
        return _row(self.project, url, request, depth, self.now, callback_name,
                    dict(options) if options else None, values)


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
