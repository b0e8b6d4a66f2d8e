"""Spiders the end-to-end tests submit; workers load them by import path (tests.spiders:...)."""

from __future__ import annotations

from crawlcluster import Request, Spider
from crawlcluster.scheduling import config


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
