"""Plain Scrapy on the benchmark site: follow every same-host link, one item per page.

    scrapy runspider bench/scrapy_project/site_spider.py -a start_url=http://127.0.0.1:PORT/ \
        -a stats_path=stats.json -O items.jsonl:jsonlines -s CONCURRENT_REQUESTS=64 ...

Settings come from the command line (bench/crawl.py prints the ones it uses).
"""

from __future__ import annotations

from typing import Any, Iterator

import scrapy
from scrapy.http import Response

from bench.scrapy_project.pages import PageCrawler, host_of, write_stats


class SiteSpider(scrapy.Spider):
    name = "benchsite"

    def __init__(self, start_url: str, stats_path: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.start_urls = [start_url]
        self.allowed_domains = [host_of(start_url)]
        self.stats_path = stats_path
        self.pages = PageCrawler(host_of(start_url))

    def parse(self, response: Response, **kwargs: Any) -> Iterator[Any]:
        return self.pages.parse(response)

    def closed(self, reason: str) -> None:
        write_stats(self.stats_path, self.crawler.stats.get_stats(), self.pages, reason)
