"""Spiders of the project-lifecycle tests; workers load them by import path
(tests.project_spiders:...). Their items say which spider and callback made them."""

from __future__ import annotations

from crawlcluster import Spider


class TitleSpider(Spider):
    """Stores each page's title, marked as this spider's; follows links to ``parse_detail``,
    a callback the link spider does not have."""

    name = "titles"

    def parse(self, response):
        yield {"url": response.url, "title": response.title, "spider": "titles", "callback": "parse"}
        for link in response.links():
            yield response.follow(link, callback="parse_detail")

    def parse_detail(self, response):
        yield {"url": response.url, "title": response.title, "spider": "titles", "callback": "parse_detail"}


class OtherSpider(Spider):
    """Any other spider, to be refused by a project that runs TitleSpider."""

    name = "other"

    def parse(self, response):
        yield {"url": response.url, "spider": "other"}
