"""The runner of spider callbacks: :func:`run_callback` turns whatever a callback yields
for a :class:`~crawlcluster.http.Response` into items and normalised, deduplicated,
filtered new requests.
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass, field
from typing import Any, Iterable

from crawlcluster.errors import InvalidURL
from crawlcluster.http import Request, Response
from crawlcluster.spider import Spider
from crawlcluster.urls import normalize_url

logger = logging.getLogger(__name__)


@dataclass
class CallbackOutcome:
    """What one callback run produced for one page."""

    items: list[dict[str, Any]] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    error: str | None = None
    # the exception itself, so the parse stage can log its traceback (rate-limited there)
    exception: BaseException | None = field(default=None, repr=False)


def run_callback(spider: Spider, callback_name: str, response: Response) -> CallbackOutcome:
    """Run a spider callback to the end and sort what it yields. An exception becomes the
    outcome's ``error`` (with the line that raised) and drops that page's partial output."""
    outcome = CallbackOutcome()
    try:
        produced = spider.callback(callback_name)(response)
        if produced is None:
            produced = ()
        elif isinstance(produced, (dict, Request, str)):
            produced = (produced,)  # a callback may return one item instead of yielding it
        for value in produced:
            if isinstance(value, Request):
                outcome.requests.append(spider.with_defaults(value))
            elif isinstance(value, dict):
                outcome.items.append(value)
            elif isinstance(value, str):
                outcome.requests.append(spider.with_defaults(Request(response.urljoin(value))))
            elif value is not None:
                raise TypeError(f"callback {callback_name} yielded {type(value).__name__}; yield dicts (items) or Requests")
    except Exception as exc:  # noqa: BLE001 - a spider bug must end in a row state, not a crash
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        outcome = CallbackOutcome(error=f"{type(spider).__name__}.{callback_name} raised {type(exc).__name__}: {exc} "
                                        f"({frame.filename}:{frame.lineno})", exception=exc)
    return outcome


def filter_requests(spider: Spider, requests: Iterable[Request], depth: int, max_depth: int | None) -> tuple[list[tuple[str, Request]], int]:
    """The requests to add to the frontier as (normalised URL, request), and how many were dropped
    (invalid, off-site, or deeper than ``max_depth``)."""
    kept: list[tuple[str, Request]] = []
    dropped = 0
    if max_depth is not None and depth + 1 > max_depth:
        return kept, sum(1 for _ in requests)
    for request in requests:
        try:
            url = normalize_url(request.url)
        except InvalidURL:
            dropped += 1
            continue
        if not spider.allows(url):
            dropped += 1
            continue
        kept.append((url, request))
    return kept, dropped
