"""A spider module that exits at import on the workers (CRAWLCLUSTER_TEST_EXIT_AT_IMPORT set),
as a module calling sys.exit() at its top would: for tests/test_spider_packages.py."""

from __future__ import annotations

import os

from crawlcluster import Request, Spider

if os.environ.get("CRAWLCLUSTER_TEST_EXIT_AT_IMPORT"):
    raise SystemExit(3)


class ExitSpider(Spider):
    """Stores each page's URL; its module never imports on the workers of the test."""

    name = "exits"
    base_url = ""

    def start(self):
        yield Request(self.base_url + "/")

    def parse(self, response):
        yield {"url": response.url}
