"""Retries with back-off, Retry-After, final failures, re-crawl by itag and age, the 304
path and auto_recrawl, on real Redis, Postgres and worker processes."""

from __future__ import annotations

import time

import pytest

import crawlcluster
from tests.outcomes import load_rows
from tests.scripted_site import ScriptedSite, page

TOLERANCE_SECONDS = 0.25


@pytest.fixture
def scripted():
    site = ScriptedSite()
    yield site
    site.stop()


@pytest.fixture
def cluster(processes):
    processes.env.update({"CRAWLCLUSTER_RETRY_DELAYS": "1,2", "CRAWLCLUSTER_TICK_SECONDS": "0.1"})
    processes.worker("all", "fetch,parse,store")
    processes.beat()
    return processes


def row_of(pg: str, project: str, url: str) -> dict:
    tasks, _ = load_rows(pg, project)
    return next(r for r in tasks if r["url"] == url)


def gaps(hits) -> list[float]:
    times = [t for t, _ in hits]
    return [b - a for a, b in zip(times, times[1:])]


def test_503_is_retried_after_each_backoff_delay_then_succeeds(cluster, scripted, pg):
    scripted.route("/flaky", lambda n, _h: (503, {}, b"busy") if n <= 2 else page("Recovered"))
    crawl = crawlcluster.submit([scripted.url + "/flaky"], project="flaky")
    crawl.wait(timeout=60)
    hits = scripted.hits("/flaky")
    assert len(hits) == 3
    first, second = gaps(hits)
    assert first >= 1 - TOLERANCE_SECONDS and second >= 2 - TOLERANCE_SECONDS, (first, second)
    row = row_of(pg, "flaky", scripted.url + "/flaky")
    assert (row["status"], row["status_code"], row["retries_left"]) == ("done", 200, 1)
    assert [item["title"] for item in crawl.results()] == ["Recovered"]


def test_retries_run_out_and_the_row_fails_with_its_status_code_and_error(cluster, scripted, pg):
    scripted.route("/down", lambda n, _h: (503, {}, b"down"))
    crawl = crawlcluster.submit([scripted.url + "/down"], project="down", settings={"retries": 2})
    stats = crawl.wait(timeout=60)
    assert len(scripted.hits("/down")) == 3  # the first try and two retries
    row = row_of(pg, "down", scripted.url + "/down")
    assert (row["status"], row["status_code"], row["retries_left"]) == ("failed", 503, 0)
    assert "HTTP 503" in row["error"]
    assert stats["failed"] == 1 and stats["items"] == 0


def test_429_retry_after_is_honoured_over_the_backoff_schedule(cluster, scripted, pg):
    scripted.route("/busy", lambda n, _h: (429, {"Retry-After": "3"}, b"slow down") if n == 1 else page("Served"))
    crawl = crawlcluster.submit([scripted.url + "/busy"], project="busy")
    crawl.wait(timeout=60)
    hits = scripted.hits("/busy")
    assert len(hits) == 2
    assert gaps(hits)[0] >= 3 - TOLERANCE_SECONDS
    assert row_of(pg, "busy", scripted.url + "/busy")["status"] == "done"


def test_404_is_final_at_once(cluster, scripted, pg):
    crawl = crawlcluster.submit([scripted.url + "/gone"], project="gone")
    crawl.wait(timeout=60)
    assert len(scripted.hits("/gone")) == 1
    row = row_of(pg, "gone", scripted.url + "/gone")
    assert (row["status"], row["status_code"]) == ("failed", 404)


def test_a_changed_itag_makes_a_known_url_due_again_and_the_same_itag_does_not(cluster, scripted, pg):
    scripted.route("/item", lambda n, _h: page(f"Item v{n}"))
    kwargs = {"base_url": scripted.url, "paths": ["/item"], "itag": "v1"}
    crawl = crawlcluster.submit("tests.spiders:ItemSpider", project="itag", spider_kwargs=kwargs)
    crawl.wait(timeout=60)
    crawlcluster.submit("tests.spiders:ItemSpider", project="itag", spider_kwargs=kwargs).wait(timeout=60)
    assert len(scripted.hits("/item")) == 1
    crawlcluster.submit("tests.spiders:ItemSpider", project="itag",
                        spider_kwargs={**kwargs, "itag": "v2"}).wait(timeout=60)
    assert len(scripted.hits("/item")) == 2
    assert [item["title"] for item in crawl.results()] == ["Item v2"]
    assert row_of(pg, "itag", scripted.url + "/item")["itag"] == "v2"


def test_an_expired_age_refetches_with_the_stored_etag_and_a_304_keeps_the_items(cluster, scripted, pg):
    def item(n, headers):
        if headers.get("if-none-match") == '"abc"':
            return 304, {"ETag": '"abc"'}, b""
        return page("Tagged", extra_headers={"ETag": '"abc"', "Last-Modified": "Mon, 23 Nov 2026 10:00:00 GMT"})

    scripted.route("/tagged", item)
    kwargs = {"base_url": scripted.url, "paths": ["/tagged"], "request_age": 1}
    crawl = crawlcluster.submit("tests.spiders:ItemSpider", project="age", spider_kwargs=kwargs)
    crawl.wait(timeout=60)
    crawlcluster.submit("tests.spiders:ItemSpider", project="age", spider_kwargs=kwargs).wait(timeout=60)
    assert len(scripted.hits("/tagged")) == 1  # age not yet passed
    time.sleep(1.2)
    crawlcluster.submit("tests.spiders:ItemSpider", project="age", spider_kwargs=kwargs).wait(timeout=60)
    hits = scripted.hits("/tagged")
    assert len(hits) == 2
    assert hits[1][1].get("if-none-match") == '"abc"'
    assert hits[1][1].get("if-modified-since") == "Mon, 23 Nov 2026 10:00:00 GMT"
    row = row_of(pg, "age", scripted.url + "/tagged")
    assert (row["status"], row["status_code"], row["etag"]) == ("done", 304, '"abc"')
    assert [item["title"] for item in crawl.results()] == ["Tagged"]


def test_force_update_refetches_a_known_url_at_once(cluster, scripted, pg):
    scripted.route("/forced", lambda n, _h: page(f"Forced {n}"))
    kwargs = {"base_url": scripted.url, "paths": ["/forced"]}
    crawlcluster.submit("tests.spiders:ItemSpider", project="force", spider_kwargs=kwargs).wait(timeout=60)
    crawlcluster.submit("tests.spiders:ItemSpider", project="force",
                        spider_kwargs={**kwargs, "force": True}).wait(timeout=60)
    assert len(scripted.hits("/forced")) == 2


def test_auto_recrawl_keeps_fetching_every_age_until_cancelled(cluster, scripted, pg):
    scripted.route("/tick", lambda n, _h: page(f"Tick {n}"))
    crawl = crawlcluster.submit("tests.spiders:RecrawlSpider", project="ticks", spider_kwargs={"base_url": scripted.url})
    deadline = time.monotonic() + 30
    while len(scripted.hits("/tick")) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    hits = scripted.hits("/tick")
    assert len(hits) >= 3
    assert all(gap >= 1 - TOLERANCE_SECONDS for gap in gaps(hits))
    assert crawl.stats()["status"] == "running"  # never finished while it re-crawls
    crawl.cancel()
    time.sleep(2.5)
    count = len(scripted.hits("/tick"))
    time.sleep(2)
    assert len(scripted.hits("/tick")) == count
