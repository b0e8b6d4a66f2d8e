"""Spiders whose callbacks misbehave on purpose, for tests/test_poison_pages.py; workers load
them by import path (tests.poison_spiders:...)."""

from __future__ import annotations

import os
import time

from crawlcluster import Request, Spider


class TreeSpider(Spider):
    """Stores each page's URL and follows its links; misbehaves on the paths it is given."""

    name = "tree"
    base_url = ""
    exit_on = ""  # the callback kills its worker process here, as a segfault or the OOM killer would
    sleep_on = ""  # the callback sleeps (for ever, as far as the time limit is concerned)
    stubborn_on = ""  # the callback sleeps and swallows the time limit's exception

    def start(self):
        yield Request(self.base_url + "/")

    def parse(self, response):
        path = response.url[len(self.base_url):]
        if self.exit_on and path == self.exit_on:
            os._exit(1)
        if self.sleep_on and path == self.sleep_on:
            time.sleep(3600)
        if self.stubborn_on and path == self.stubborn_on:
            for _ in range(3600):
                try:
                    time.sleep(1)
                except BaseException:  # noqa: BLE001, S110 - swallows SoftTimeLimitExceeded on purpose
                    pass
        yield {"url": response.url}
        for link in response.css("a"):
            yield response.follow(link)


class BrokenSpider(Spider):
    """A spider whose construction raises on the workers: every parse task of it raises."""

    name = "broken"
    base_url = ""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if os.environ.get("CRAWLCLUSTER_TEST_BROKEN_SPIDER"):
            raise RuntimeError("the spider's service is unreachable")

    def start(self):
        yield Request(self.base_url + "/a")
        yield Request(self.base_url + "/b")

    def parse(self, response):
        yield {"url": response.url}
