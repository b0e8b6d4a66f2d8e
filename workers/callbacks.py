"""A spider callback run on one page, and what it yields sorted: items, and the requests worth
a row of the frontier.

:func:`run_callback` runs a callback to its end (an exception becomes the page's error, with
the line that raised) and turns items of any kind into plain dicts; :func:`filter_requests`
keeps the normalised, on-site requests within the depth limit and the page bounds, counting
what it drops. The parse engine (:mod:`workers.parser`), ``crawlcluster parse`` and the
console's debugger (:mod:`workers.trial`) and render="auto" sampling
(:mod:`workers.autorender`) all run callbacks through here, so a callback behaves the same
in each.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from typing import Any, Iterable

from crawlcluster import settings
from crawlcluster.errors import InvalidURL
from crawlcluster.http import Request, Response
from crawlcluster.items import ItemError, as_item, is_item
from crawlcluster.schema import crawl_tasks
from crawlcluster.spider import Spider
from crawlcluster.spider_log import parsing
from crawlcluster.urls import host_problem, normalize_url, url_host
from workers.page_bounds import LINKS_BAD_HOST, LINKS_TOO_LONG


@dataclass
class CallbackOutcome:
    """What one callback run produced for one page."""

    items: list[dict[str, Any]] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    error: str | None = None
    links_over_limit: int = 0  # requests yielded past max_links_per_page, dropped
    # the exception itself, so the parse stage can log its traceback (rate-limited there)
    exception: BaseException | None = field(default=None, repr=False)


def run_callback(spider: Spider, callback_name: str, response: Response,
                 max_links: int | None = None, project: str | None = None) -> CallbackOutcome:
    """Run a spider callback to the end and sort what it yields. An exception becomes the
    outcome's ``error`` (with the line that raised) and drops that page's partial output.
    Requests past ``max_links`` (default: the max_links_per_page setting) are counted and
    dropped as they are yielded, so a page of 100,000 links never holds them all.
    ``self.logger`` lines written meanwhile name ``project`` and the page's URL."""
    with parsing(project, response.url):
        return _run_callback(spider, callback_name, response, max_links)


def _run_callback(spider: Spider, callback_name: str, response: Response,
                  max_links: int | None) -> CallbackOutcome:
    outcome = CallbackOutcome()
    max_links = max_links if max_links is not None else settings.current().max_links_per_page
    produced: Any = None
    try:
        produced = spider.callback(callback_name)(response)
        if produced is None:
            produced = ()
        elif isinstance(produced, (dict, Request, str)) or is_item(produced):
            produced = (produced,)  # a callback may return one item instead of yielding it
        for value in produced:
            if isinstance(value, (Request, str)) and len(outcome.requests) >= max_links:
                outcome.links_over_limit += 1
            elif isinstance(value, Request):
                outcome.requests.append(spider.with_defaults(value))
            elif isinstance(value, str):
                outcome.requests.append(spider.with_defaults(Request(response.urljoin(value))))
            elif value is not None:
                # dicts, dataclasses, attrs, pydantic, mappings: plain JSON-able dicts from here on
                item = as_item(value)
                if item is None:
                    raise TypeError(f"callback {callback_name} yielded {type(value).__name__}; yield items "
                                    "(dicts, dataclasses, attrs or pydantic objects) or Requests")
                outcome.items.append(item)
    except Exception as exc:  # noqa: BLE001 - a spider bug must end in a row state, not a crash
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        suspended = getattr(produced, "gi_frame", None) if isinstance(exc, ItemError) else None
        if suspended is not None:  # the item's fault: the line that yielded it, not ours
            frame = traceback.FrameSummary(suspended.f_code.co_filename, suspended.f_lineno, "")
        what = f"raised {type(exc).__name__}: {exc}"
        if type(exc).__name__ == "SoftTimeLimitExceeded":  # Celery's, raised into the callback at the limit
            limit = settings.current().parse_time_limit_seconds
            what = f"ran past the parse time limit (parse_time_limit_seconds={limit:g})"
        outcome = CallbackOutcome(error=f"{type(spider).__name__}.{callback_name} {what} "
                                        f"({frame.filename}:{frame.lineno})", exception=exc)
    return outcome


# the frontier's column sizes: a longer host (or etag, Last-Modified) would make the whole
# batch's insert fail on Postgres, so such values are dropped or left out where they are read
MAX_HOST_LENGTH: int = getattr(crawl_tasks.c.host.type, "length", None) or 300
MAX_ETAG_LENGTH: int = getattr(crawl_tasks.c.etag.type, "length", None) or 500
MAX_LAST_MODIFIED_LENGTH: int = getattr(crawl_tasks.c.last_modified.type, "length", None) or 100
# links filtered, as an outcome's ``links_filtered`` names them (crawlcluster.database.tallies)
LINKS_OFFSITE, LINKS_DUPLICATE = "offsite", "duplicate"


def filter_requests(spider: Spider, requests: Iterable[Request], depth: int, max_depth: int | None,
                    max_url_length: int | None = None,
                    counts: dict[str, int] | None = None) -> tuple[list[tuple[str, Request]], int]:
    """The requests to add to the frontier as (normalised URL, request), and how many were dropped
    (invalid, longer than ``max_url_length``, with a host name that cannot be a DNS name or
    that the frontier cannot hold, off-site, or deeper than ``max_depth``). ``counts`` gets
    the too long, bad host and off-site ones by their statistics' names."""
    kept: list[tuple[str, Request]] = []
    dropped = 0
    counts = counts if counts is not None else {}
    if max_depth is not None and depth + 1 > max_depth:
        return kept, sum(1 for _ in requests)
    max_url_length = max_url_length if max_url_length is not None else settings.current().max_url_length
    for request in requests:
        try:
            url = normalize_url(request.url)
        except InvalidURL:
            dropped += 1
            continue
        if len(url) > max_url_length:
            dropped += 1
            counts[LINKS_TOO_LONG] = counts.get(LINKS_TOO_LONG, 0) + 1
            continue
        if len(url_host(url)) > MAX_HOST_LENGTH or host_problem(url) is not None:
            dropped += 1
            counts[LINKS_BAD_HOST] = counts.get(LINKS_BAD_HOST, 0) + 1
            continue
        if not spider.allows(url):
            dropped += 1
            counts[LINKS_OFFSITE] = counts.get(LINKS_OFFSITE, 0) + 1
            continue
        kept.append((url, request))
    return kept, dropped
