"""Dead hosts end: a name that does not resolve, a refused port and a robots.txt that answers
500 end their hosts' rows ``failed`` after a bounded number of attempts, and a crawl of the
rough site (tests/rough_site.py) with default settings ends by itself, embedded and on a
real cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from celery import Celery

import crawlcluster
from crawlcluster import frontier
from crawlcluster.db import get_engine
from crawlcluster.politeness import ROBOTS_CALLBACK
from crawlcluster.scheduler import Dispatcher
from crawlcluster.schema import crawl_tasks, hosts
from tests.outcomes import load_rows
from tests.rough_site import DEAD_HOST_URL, RoughSite, free_port
from tests.scripted_site import ScriptedSite, page
from workers.fetcher import Fetcher
from workers.store import store_pages

CLI = [sys.executable, "-m", "crawlcluster.cli"]


@pytest.fixture(params=["postgres", "sqlite"])
def database(request):
    if request.param == "postgres":
        return request.getfixturevalue("pg")
    return request.getfixturevalue("sqlite_url")


@pytest.fixture
def test_app(redis_url):
    app = Celery("crawlcluster-test")
    app.config_from_object("celeryconfig")
    app.conf.broker_url = redis_url
    return app


@pytest.fixture
def rough():
    site = RoughSite().serve()
    yield site
    site.stop()


def take_fetch_messages(app: Celery) -> list[dict]:
    """The stage messages waiting in the fetch queue, taken off it."""
    out = []
    with app.connection() as connection:
        queue = connection.SimpleQueue("fetch", accept=["msgpack"])
        try:
            while True:
                try:
                    message = queue.get(block=True, timeout=0.2)
                except queue.Empty:
                    return out
                out.append(message.decode()[0][0])
                message.ack()
        finally:
            queue.close()


def fetch_one(url: str):
    fetcher = Fetcher(user_agent="crawlcluster-test/1", connect_timeout_seconds=2, read_timeout_seconds=2,
                      max_body_bytes=1 << 20, concurrency=4)
    try:
        return fetcher.fetch_many([{"id": "x", "url": url}])[0]
    finally:
        fetcher.close()


def test_a_name_that_does_not_resolve_is_a_dns_error_and_a_refused_port_a_connect_error(rough):
    dead = fetch_one(DEAD_HOST_URL)
    assert dead.error is not None and dead.error.kind == "dns"
    assert "cannot resolve nosuch-host.invalid" in str(dead.error)
    refused = fetch_one(rough.refused_url)
    assert refused.error is not None and refused.error.kind == "connect"
    assert "connection refused" in str(refused.error)


def test_a_host_whose_robots_txt_stays_unreachable_ends_its_rows_after_the_set_attempts(database, test_app):
    """The scheduler and the store engine for real, with the fetch stage run by hand on each
    published message: three dead hosts (no name, a refused port, robots.txt 500) end after
    three robots.txt attempts each; the live host's rows are dispatched; the project is not
    paused by the dead hosts' failures."""
    from tasks.fetch import failure_message

    live = ScriptedSite()
    broken = ScriptedSite()
    broken.route("/robots.txt", lambda n, _h: (500, {}, b"broken"))
    live.route("/robots.txt", lambda n, _h: (404, {}, b"none"))
    live.route("/ok", lambda n, _h: page("OK"))
    refused_url = f"http://127.0.0.1:{free_port()}"
    dead_urls = [f"{DEAD_HOST_URL}{i}" for i in range(12)] + [f"{refused_url}/{i}" for i in range(3)] + \
        [f"{broken.url}/{i}" for i in range(3)]
    fetcher = Fetcher(user_agent="crawlcluster-test/1", connect_timeout_seconds=2, read_timeout_seconds=2,
                      max_body_bytes=1 << 20, concurrency=8)
    try:
        # short delays between robots.txt attempts, so the test does not wait 2 s and 10 s
        crawl = crawlcluster.submit([*dead_urls, live.url + "/ok"], project="dead",
                                    settings={"retry_delays": [0.05]}, database_url=database)
        dispatcher = Dispatcher(test_app, claim_batch_size=100, max_queued_per_project=1000,
                                queued_deadline_seconds=60, fetch_batch_size=16, tick_seconds=0.1,
                                database_url=database)
        engine = get_engine(database)
        robots_fetches: Counter[str] = Counter()
        live_dispatched = False
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            dispatcher.tick()
            dispatcher.flush()
            for message in take_fetch_messages(test_app):
                tasks = [t for t in message["tasks"] if t.get("cb") == ROBOTS_CALLBACK]
                live_dispatched |= any(t["url"] == live.url + "/ok" for t in message["tasks"])
                for result in fetcher.fetch_many(tasks):
                    robots_fetches[result.url] += 1
                    # every robots.txt here fails (404 too): the fetch stage sends it to store
                    assert not result.ok
                    store_pages(engine, "dead", [failure_message(result)])
            with engine.connect() as conn:
                counts = frontier.count_by_status(conn, "dead")
            if counts["pending"] == 0 and live_dispatched:
                break
            time.sleep(0.05)
        dispatcher.close()
        with engine.connect() as conn:
            rows = {r.url: r for r in conn.execute(crawl_tasks.select().where(crawl_tasks.c.project == "dead"))}
            host_rows = {r.host: r for r in conn.execute(hosts.select())}
            project = frontier.project_row(conn, "dead")
        for url in dead_urls:
            row = rows[url]
            assert (row.status, row.error_kind) == ("failed", "robots"), (url, row.status, row.error)
            assert row.error.endswith("; nothing on this host was fetched") and "after 3 attempts" in row.error
        assert "robots.txt of nosuch-host.invalid unreachable after 3 attempts (dns: cannot resolve" in \
            rows[DEAD_HOST_URL + "0"].error
        assert "(connect: connection refused" in rows[refused_url + "/0"].error
        assert "(HTTP 500" in rows[broken.url + "/0"].error
        assert robots_fetches == {DEAD_HOST_URL + "robots.txt": 3, refused_url + "/robots.txt": 3,
                                  broken.url + "/robots.txt": 3, live.url + "/robots.txt": 1}
        assert len(broken.hits("/robots.txt")) == 3 and broken.hits("/0") == []  # nothing else fetched
        assert host_rows["nosuch-host.invalid"].robots_status == "unreachable"
        assert live_dispatched and rows[live.url + "/ok"].status == "queued"
        assert project["status"] == "running" and project["consecutive_failures"] == 0
        assert crawl.failure_counts()["robots"] == len(dead_urls)
    finally:
        fetcher.close()
        live.stop()
        broken.stop()
