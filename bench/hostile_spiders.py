"""Spiders for ``python -m bench hostile``: what a careless or trusting spider does on a hostile site."""

from __future__ import annotations

import os
from typing import Any, Iterator

from crawlcluster import Request, Response, Spider

# the start URL: the embedded crawl runs its spiders in its own process, which inherits it
START_ENV = "BENCH_HOSTILE_START"


class FollowEverything(Spider):
    """Follows every link of every page, wherever it points (no ``allowed_domains``): the
    spider that lets a site choose where the crawler connects."""

    name = "follow-everything"

    def start(self) -> Iterator[Request]:
        yield Request(os.environ[START_ENV])

    def parse(self, response: Response) -> Iterator[Any]:
        yield {"url": response.url, "title": response.title}
        for link in response.links():
            yield Request(link)


class WithCredentials(Spider):
    """Sends a bearer token and a session cookie with its start request, as a spider for a
    site behind a login does; the start URL redirects to another origin."""

    name = "with-credentials"

    def start(self) -> Iterator[Request]:
        yield Request(os.environ[START_ENV], headers={"Authorization": "Bearer bench-secret-token"},
                      cookies={"session": "bench-secret-session"})

    def parse(self, response: Response) -> Iterator[Any]:
        yield {"url": response.url}


class LongRequest(Spider):
    """Starts with a request for a URL 1 MB long beside its start URL, as a spider that builds
    URLs from data may."""

    name = "long-request"

    def start(self) -> Iterator[Request]:
        yield Request(os.environ[START_ENV])
        yield Request(os.environ[START_ENV] + "q?" + "a" * 1_000_000)

    def parse(self, response: Response) -> Iterator[Any]:
        yield {"url": response.url}
