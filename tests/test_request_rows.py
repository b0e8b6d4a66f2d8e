"""The parse stage's row maker builds exactly the rows task_row builds, and knows which
links' rows are plain (and so may be skipped when this process already sent them)."""

from __future__ import annotations

import pytest

from crawlcluster.http import Request
from crawlcluster.request_rows import RowMaker, task_row
from crawlcluster.scheduling import config
from crawlcluster.spider import LinkSpider, Spider


class AgedSpider(Spider):
    name = "aged"
    age = 3600
    user_agent = "aged-bot/1"
    download_timeout = 7.5
    priority = 3

    def parse(self, response):  # pragma: no cover - never called here
        return []

    @config(itag="v2", retries=5)
    def detail(self, response):  # pragma: no cover - never called here
        return []


class PlainSpider(LinkSpider):
    default_headers = {"Accept-Language": "fr"}

    @config(priority=9, retry_delays=[3, 4])
    def listing(self, response):  # pragma: no cover - never called here
        return []


REQUESTS = [
    Request("http://h.test/a"),
    Request("http://h.test/b", callback="listing"),
    Request("http://h.test/c", data={"k": 1}),
    Request("http://h.test/d", priority=4),
    Request("http://h.test/e", headers={"X-A": "1"}),
    Request("http://h.test/f", method="POST", body="x=1"),
    Request("http://h.test/g", age=60),
    Request("http://h.test/h", retries=0, retry_delays=[1.0]),
    Request("http://h.test/i", force_update=True),
    Request("http://h.test/j", exetime=10_000.0),
    Request("http://h.test/k", render=True),
]


@pytest.mark.parametrize("spider", [PlainSpider(), AgedSpider()], ids=["plain", "aged"])
@pytest.mark.parametrize("settings", [None, {"user_agent": "project-bot/2", "retries": 1}],
                         ids=["none", "project"])
def test_the_row_maker_builds_the_rows_task_row_builds(spider, settings):
    maker = RowMaker("p", spider, settings, now=1000.0)
    for depth, request in enumerate(REQUESTS):
        callback = request.callback_name()
        if not callable(getattr(spider, callback, None)) and callback != "parse":
            continue
        expected = task_row("p", request.url, request, spider=spider, project_settings=settings, depth=depth,
                            now=1000.0)
        assert maker.row(request.url, request, depth) == expected
        # twice: the second comes from what the maker resolved for the callback
        assert maker.row(request.url, request, depth) == expected
        plain_id = maker.plain_id(request.url, request)
        row_is_plain = (expected.get("itag") is None and expected.get("age") is None
                        and not expected.get("_force") and not expected.get("_cancel"))
        if plain_id is not None:
            assert row_is_plain and plain_id == expected["task_id"]
    with_options = maker.row("http://h.test/z", Request("http://h.test/z"), 2, fetch_options={"shape_run": 2})
    assert with_options == task_row("p", "http://h.test/z", Request("http://h.test/z"), spider=spider,
                                    project_settings=settings, depth=2, now=1000.0,
                                    fetch_options={"shape_run": 2})


def test_only_links_whose_rows_are_plain_have_a_plain_id():
    plain = RowMaker("p", PlainSpider(), None, now=1.0)
    assert plain.plain_id("http://h.test/a", Request("http://h.test/a")) is not None
    assert plain.plain_id("http://h.test/b", Request("http://h.test/b", callback="listing")) is not None
    assert plain.plain_id("http://h.test/g", Request("http://h.test/g", age=60)) is None
    assert plain.plain_id("http://h.test/i", Request("http://h.test/i", force_update=True)) is None
    assert plain.plain_id("http://h.test/f", Request("http://h.test/f", method="POST")) is None
    aged = RowMaker("p", AgedSpider(), None, now=1.0)  # the spider's age makes every row a re-crawl
    assert aged.plain_id("http://h.test/a", Request("http://h.test/a")) is None
