"""Spiders the end-to-end tests submit; workers load them by import path (tests.spiders:...)."""

from __future__ import annotations

from crawlcluster import Request, Spider
from crawlcluster.scheduling import config, every


class ItemSpider(Spider):
    """Requests ``base_url + paths`` with the given itag/age/force and stores each page's title."""

    name = "items"
    base_url = ""
    paths: list[str] = []
    itag: str | None = None
    request_age: int | None = None
    force: bool = False

    def start(self):
        for path in self.paths:
            yield Request(self.base_url + path, callback="parse_item", itag=self.itag, age=self.request_age,
                          force_update=self.force)

    def parse_item(self, response):
        yield {"url": response.url, "title": response.title}


class RecrawlSpider(Spider):
    """One page, crawled again every second by auto_recrawl."""

    name = "recrawl"
    base_url = ""

    def start(self):
        yield Request(self.base_url + "/tick", callback="parse_tick")

    @config(age=1, auto_recrawl=True)
    def parse_tick(self, response):
        yield {"url": response.url}


class PrioritySpider(Spider):
    """Start requests with explicit priorities; the fetch order shows the scheduler's order."""

    name = "priority"
    base_url = ""
    priorities: dict[str, int] = {}

    def start(self):
        for path, priority in self.priorities.items():
            yield Request(self.base_url + path, priority=priority, callback="parse_item")

    def parse_item(self, response):
        yield {"url": response.url}


class FinishSpider(Spider):
    """Follows nothing; writes one line to ``marker_path`` each time the crawl finishes."""

    name = "finish"
    start_urls: list[str] = []
    marker_path = ""

    def parse(self, response):
        yield {"url": response.url}

    def on_finished(self, stats):
        with open(self.marker_path, "a", encoding="utf-8") as marker:
            marker.write(f"{stats['done']}\n")


class EverySpider(Spider):
    """An @every(seconds=1) method asking for /news, whose age is 2 seconds."""

    name = "every"
    base_url = ""

    def start(self):
        return []

    @every(seconds=1)
    def refresh(self):
        yield Request(self.base_url + "/news", age=2, callback="parse")

    def parse(self, response):
        yield {"url": response.url}
