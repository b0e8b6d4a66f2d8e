"""Per-host politeness and project limits held across two fetch worker processes: delay,
in-flight limit, Crawl-delay, robots.txt, rate, in-queue limit, priority and host fairness,
measured from the test server's own request log."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import create_engine, func, select

import crawlcluster
from crawlcluster.schema import crawl_tasks
from tests.outcomes import load_rows
from tests.scripted_site import ScriptedSite, page

TOLERANCE_SECONDS = 0.15


@pytest.fixture
def make_site():
    sites = []

    def make() -> ScriptedSite:
        site = ScriptedSite()
        for i in range(60):
            site.route(f"/p/{i}", lambda n, _h, i=i: page(f"Page {i}"))
        sites.append(site)
        return site

    yield make
    for site in sites:
        site.stop()


@pytest.fixture
def cluster(processes):
    processes.env.update({"CRAWLCLUSTER_TICK_SECONDS": "0.1"})
    processes.worker("fetch-1", "fetch")
    processes.worker("fetch-2", "fetch")
    processes.worker("parse-store", "parse,store")
    processes.beat()
    return processes


def page_hits(site: ScriptedSite) -> list[tuple[float, str]]:
    with site.lock:
        return [(t, p) for t, p, _ in site.log if p.startswith("/p/")]


def urls(site: ScriptedSite, count: int, start: int = 0) -> list[str]:
    return [f"{site.url}/p/{i}" for i in range(start, start + count)]


def test_per_host_delay_holds_between_every_two_requests_across_two_fetch_workers(cluster, make_site):
    site = make_site()
    crawl = crawlcluster.submit(urls(site, 12), project="delay", settings={"per_host_delay": 0.5})
    crawl.wait(timeout=90)
    times = [t for t, _ in page_hits(site)]
    assert len(times) == 12
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert min(gaps) >= 0.5 - TOLERANCE_SECONDS, gaps
    assert {name: "crawlcluster.fetch" in cluster.log(name) for name in ("fetch-1", "fetch-2")} == \
        {"fetch-1": True, "fetch-2": True}


def test_per_host_in_flight_limit_holds_across_two_fetch_workers(cluster, make_site):
    site = make_site()
    site.delay_seconds = 0.3
    crawl = crawlcluster.submit(urls(site, 40), project="inflight", settings={"per_host_concurrency": 3})
    stats = crawl.wait(timeout=90)
    assert stats["done"] == 41  # 40 pages and robots.txt
    assert site.max_in_flight == 3


def test_robots_crawl_delay_raises_the_host_delay(cluster, make_site):
    site = make_site()
    site.route("/robots.txt",
               lambda n, _h: (200, {"Content-Type": "text/plain"}, b"User-agent: *\nCrawl-delay: 1\n"))
    crawlcluster.submit(urls(site, 5), project="crawldelay").wait(timeout=90)
    times = [t for t, _ in page_hits(site)]
    assert len(times) == 5
    assert min(b - a for a, b in zip(times, times[1:])) >= 1 - TOLERANCE_SECONDS


def test_robots_disallow_is_never_fetched_and_ends_as_a_disallowed_row(cluster, make_site, pg):
    site = make_site()
    site.route("/robots.txt", lambda n, _h: (200, {"Content-Type": "text/plain"},
                                             b"User-agent: *\nDisallow: /p/1\nDisallow: /p/2\n"))
    crawl = crawlcluster.submit(urls(site, 4), project="robots")
    stats = crawl.wait(timeout=90)
    hit_paths = sorted(p for _, p in page_hits(site))
    assert hit_paths == ["/p/0", "/p/3"]  # /p/1 and /p/2 are disallowed
    assert stats["disallowed"] == 2
    tasks, _ = load_rows(pg, "robots")
    disallowed = [t for t in tasks if t["status"] == "disallowed"]
    assert sorted(t["url"] for t in disallowed) == [f"{site.url}/p/1", f"{site.url}/p/2"]
    assert all("robots.txt" in t["error"] for t in disallowed)
    assert len(site.hits("/robots.txt")) == 1


def test_robots_5xx_postpones_the_host_then_fetches_it(cluster, make_site):
    site = make_site()
    site.route("/robots.txt", lambda n, _h: (503, {}, b"down") if n == 1 else (404, {}, b"none"))
    crawlcluster.submit(urls(site, 3), project="robots5xx").wait(timeout=90)
    robots_hits = [t for t, _ in site.hits("/robots.txt")]
    first_page = min(t for t, _ in page_hits(site))
    assert len(robots_hits) == 2
    assert robots_hits[1] - robots_hits[0] >= 2 - TOLERANCE_SECONDS  # postponed for the quick policy's 2 s
    assert first_page > robots_hits[1]
    assert len(page_hits(site)) == 3


def test_project_rate_limit_bounds_requests_per_second(cluster, make_site):
    site = make_site()
    crawl = crawlcluster.submit(urls(site, 20), project="rate",
                                settings={"rate": 4, "burst": 1, "per_host_concurrency": 50})
    crawl.wait(timeout=90)
    times = sorted(t for t, _ in page_hits(site))
    assert len(times) == 20
    span = times[-1] - times[0]
    assert span >= 19 / 4 * 0.85, span  # 20 requests at 4/s take about 4.75 s
    for start in times:  # no 2-second window holds more than rate*2 + burst
        assert sum(1 for t in times if start <= t < start + 2) <= 4 * 2 + 1


def test_in_queue_limit_keeps_at_most_n_queued_and_loses_nothing(cluster, make_site, pg):
    site = make_site()
    site.delay_seconds = 0.05
    crawl = crawlcluster.submit(urls(site, 50), project="queue",
                                settings={"queue_limit": 5, "per_host_concurrency": 50})
    engine = create_engine(pg)
    most = 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal most
        with engine.connect() as conn:
            while not stop.is_set():
                queued = conn.execute(select(func.count()).where(
                    crawl_tasks.c.project == "queue", crawl_tasks.c.status == "queued")).scalar_one()
                most = max(most, queued)
                conn.commit()
                time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        stats = crawl.wait(timeout=90)
    finally:
        stop.set()
        watcher.join(5)
        engine.dispose()
    assert 1 <= most <= 5
    assert stats["done"] == 51 and len(page_hits(site)) == 50


def test_higher_priority_urls_are_fetched_first(cluster, make_site):
    site = make_site()
    priorities = {"/p/0": 1, "/p/1": 5, "/p/2": 3, "/p/3": 9, "/p/4": 7}
    crawlcluster.submit("tests.spiders:PrioritySpider", project="prio",
                        spider_kwargs={"base_url": site.url, "priorities": priorities},
                        settings={"per_host_concurrency": 1}).wait(timeout=90)
    order = [p for _, p in page_hits(site)]
    assert order == ["/p/3", "/p/4", "/p/1", "/p/2", "/p/0"]


def test_a_big_host_does_not_starve_a_small_one(cluster, make_site):
    big, small = make_site(), make_site()
    big.delay_seconds = small.delay_seconds = 0.1
    crawl = crawlcluster.submit(urls(big, 60) + urls(small, 5), project="fair",
                                settings={"per_host_concurrency": 2})
    crawl.wait(timeout=120)
    big_times = [t for t, _ in page_hits(big)]
    small_times = [t for t, _ in page_hits(small)]
    assert len(big_times) == 60 and len(small_times) == 5
    # the small host is done long before the big one, not after it
    assert max(small_times) < min(big_times) + (max(big_times) - min(big_times)) / 2
