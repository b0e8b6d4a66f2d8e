"""Spiders for tests/test_cli_crawl.py, run by `crawlcluster crawl tests.cli_spiders:...`;
they read the test site's address from CLI_TEST_SITE (the command's environment)."""

from __future__ import annotations

import os

from crawlcluster import Request, Spider


class RaisingSpider(Spider):
    """Five pages whose callback always raises, as a spider with a wrong selector would."""

    name = "raising"

    def start(self):
        for i in range(5):
            yield Request(f"{os.environ['CLI_TEST_SITE']}/r/{i}")

    def parse(self, response):
        raise ValueError(f"no price on {response.url}")


class WideningSpider(Spider):
    """A chain of pages whose items gain keys as the crawl goes on (a CSV header that grows)."""

    name = "widening"

    def start(self):
        yield Request(f"{os.environ['CLI_TEST_SITE']}/w/0")

    def parse(self, response):
        number = int(response.url.rsplit("/", 1)[1])
        item = {"url": response.url, "title": response.title}
        if number >= 2:
            item["price"] = number * 10
        if number >= 4:
            item["tags"] = ["a", str(number)]
        yield item
        if number < 5:
            yield Request(f"{os.environ['CLI_TEST_SITE']}/w/{number + 1}")
