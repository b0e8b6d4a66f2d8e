"""scrapy-redis on the benchmark site: the same work per page as site_spider.py, with the
request queue and the dupefilter in Redis so several processes share one crawl.

    scrapy runspider bench/scrapy_project/redis_spider.py -a host=127.0.0.1 -a stats_path=stats.json \
        -s REDIS_URL=redis://127.0.0.1:6379/13 -s SCHEDULER=scrapy_redis.scheduler.Scheduler ...

The start URL is pushed to the `benchsite-redis:start_urls` list as JSON once every
process has opened; each process closes itself after MAX_IDLE_TIME_BEFORE_CLOSE seconds
with nothing to do.
"""

from __future__ import annotations

from typing import Any, Iterator

from scrapy.http import Response
from scrapy_redis.spiders import RedisSpider

from bench.scrapy_project.pages import PageCrawler, write_stats


class RedisSiteSpider(RedisSpider):
    name = "benchsite-redis"
    redis_key = "benchsite-redis:start_urls"

    def __init__(self, host: str = "127.0.0.1", stats_path: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.allowed_domains = [host]
        self.stats_path = stats_path
        self.pages = PageCrawler(host)

    def parse(self, response: Response, **kwargs: Any) -> Iterator[Any]:
        return self.pages.parse(response)

    def closed(self, reason: str) -> None:
        write_stats(self.stats_path, self.crawler.stats.get_stats(), self.pages, reason)
