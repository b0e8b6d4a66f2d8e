"""What both benchmark spiders do with a page: one item, and every same-host link followed.

Kept apart from the spiders so plain Scrapy and scrapy-redis do exactly the same work per
page, and so the spiders' stats file is written the same way.
"""

from __future__ import annotations

import json
import time
from typing import Any, Iterator
from urllib.parse import urlsplit

from scrapy.http import Response
from scrapy.linkextractors import LinkExtractor


class PageCrawler:
    """Item and follow-up requests of one page; records when the last item was made."""

    def __init__(self, host: str) -> None:
        # allow_domains would compare "127.0.0.1:PORT" with the domain and keep nothing
        self.links = LinkExtractor()
        self.host = host
        self.items = 0
        self.first_item_at = 0.0
        self.last_item_at = 0.0

    def parse(self, response: Response) -> Iterator[Any]:
        links = []
        if hasattr(response, "text"):  # HTML or text, not bytes
            links = [link for link in self.links.extract_links(response)
                     if urlsplit(link.url).hostname == self.host]
        now = time.time()  # wall clock: the harness compares it with the site's timestamps
        if not self.items:
            self.first_item_at = now
        self.last_item_at = now
        self.items += 1
        title = response.css("title::text").get() if hasattr(response, "text") else None
        yield {"url": response.url, "title": title, "status": response.status, "links": len(links)}
        for link in links:
            yield response.follow(link.url)


def host_of(url: str) -> str:
    return urlsplit(url).hostname or ""


def write_stats(path: str | None, crawler_stats: dict[str, Any], pages: PageCrawler, reason: str) -> None:
    """The harness reads this after the process exits: items and the last item's time."""
    if not path:
        return
    stats = {key: value for key, value in crawler_stats.items() if isinstance(value, (int, float, str))}
    stats.update({"items": pages.items, "first_item_at": pages.first_item_at,
                  "last_item_at": pages.last_item_at, "reason": reason})
    with open(path, "w", encoding="utf-8") as out:
        json.dump(stats, out)
