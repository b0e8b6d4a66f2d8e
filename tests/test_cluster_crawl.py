"""Cluster mode for real: `celery -A crawlcluster worker -Q fetch|parse|store` and `celery -A
crawlcluster beat` as subprocesses on the test Redis and Postgres, a crawl submitted through
crawlcluster.submit, outcomes checked against the demo site's hit log."""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict

import pytest
from celery import Celery

import crawlcluster
from tests.outcomes import assert_site_crawled, assert_statistics_equal_rows, load_rows


class EventRecorder:
    """Records which worker received which task, from Celery's own task-received events."""

    def __init__(self, broker_url: str) -> None:
        self.app = Celery(broker=broker_url)
        self.app.config_from_object("celeryconfig")  # the same key prefix as the cluster
        self.app.conf.broker_url = broker_url
        self.received: dict[str, Counter[str]] = defaultdict(Counter)
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _on_received(self, event: dict) -> None:
        self.received[event["hostname"].split("@")[0]][event["name"]] += 1

    def _run(self) -> None:
        with self.app.connection() as connection:
            self._receiver = self.app.events.Receiver(connection,
                                                      handlers={"task-received": self._on_received})
            self._ready.set()
            # returns within a second of should_stop being set
            self._receiver.capture(limit=None, timeout=None, wakeup=False)

    def start(self) -> "EventRecorder":
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        self._receiver.should_stop = True
        self._thread.join(10)


@pytest.fixture
def events(redis_url):
    recorder = EventRecorder(redis_url)
    recorder.start()
    yield recorder
    recorder.stop()


def _start_cluster(processes, fetch_name: str = "fetch") -> None:
    processes.worker(fetch_name, "fetch")
    processes.worker("parse", "parse")
    processes.worker("store", "store")
    processes.beat()


def test_cluster_crawl_fetches_every_page_once_and_each_queue_gets_only_its_stage(
        site, processes, events, pg):
    _start_cluster(processes)
    crawl = crawlcluster.submit([site.url + "/"], project="site")
    stats = crawl.wait(timeout=240)
    tasks, items = load_rows(pg, "site")
    assert_site_crawled(site, tasks, items)
    assert stats["pending"] == stats["queued"] == 0
    assert stats["done"] + stats["failed"] == len(site.site.reachable()) + 1  # and robots.txt
    assert stats["items"] == len(items)
    assert sorted(i["url"] for i in crawl.results()) == sorted(i["url"] for i in items)

    # each worker received only its own stage's task, as Celery's events report it
    time.sleep(1.0)
    assert set(events.received["fetch"]) == {"crawlcluster.fetch"}, dict(events.received)
    # the parse queue also carries the spider hooks (on_finished), which need the spider code
    assert "crawlcluster.parse" in events.received["parse"], dict(events.received)
    assert set(events.received["parse"]) <= {"crawlcluster.parse", "crawlcluster.finished"}, \
        dict(events.received)
    assert set(events.received["store"]) == {"crawlcluster.store"}, dict(events.received)

    # the scheduler notices the finished project
    deadline = time.monotonic() + 20
    while crawl.stats()["status"] != "finished" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert crawl.stats()["status"] == "finished"


def test_fetch_worker_killed_mid_crawl_loses_nothing_and_stores_every_page_once(site, processes, pg):
    processes.env["CRAWLCLUSTER_QUEUED_DEADLINE_SECONDS"] = "10"
    # a slow-ish fetch worker so the kill lands mid-crawl
    processes.env["CRAWLCLUSTER_FETCH_BATCH_SIZE"] = "4"
    _start_cluster(processes, fetch_name="fetch-a")
    crawl = crawlcluster.submit([site.url + "/"], project="killed")
    deadline = time.monotonic() + 120
    while crawl.stats()["done"] < 40 and time.monotonic() < deadline:
        time.sleep(0.05)
    before = crawl.stats()
    assert before["done"] >= 40 and (before["pending"] + before["queued"]) > 0, before
    processes.kill("fetch-a")
    processes.worker("fetch-b", "fetch")
    stats = crawl.wait(timeout=240)
    tasks, items = load_rows(pg, "killed")
    # a page the killed worker had already requested may be fetched again; nothing is lost
    # and nothing is stored twice
    assert_site_crawled(site, tasks, items, exactly_once=False)
    assert_statistics_equal_rows(pg, "killed")
    assert stats["done"] + stats["failed"] == len(site.site.reachable()) + 1
    refetched = sum(n - 1 for n in site.hits().values() if n > 1)
    assert refetched <= before["queued"] + 4 * 10
    assert "crawlcluster.fetch" in processes.log("fetch-b")


class SlowSite:
    """Pages that answer after a pause, counting how many requests are in flight at once."""

    def __init__(self, delay_seconds: float) -> None:
        import http.server

        self.delay_seconds = delay_seconds
        self.in_flight = 0
        self.max_in_flight = 0
        self.served = 0
        self.lock = threading.Lock()
        site = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                with site.lock:
                    site.in_flight += 1
                    site.max_in_flight = max(site.max_in_flight, site.in_flight)
                time.sleep(site.delay_seconds)
                body = b"<html><head><title>slow</title></head><body>slow</body></html>"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                with site.lock:
                    site.in_flight -= 1
                    site.served += 1

            def log_message(self, *args) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 512  # 100+ clients connect at once

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.long_fault
def test_one_plain_fetch_worker_process_holds_over_100_fetches_in_flight(processes, pg):
    slow = SlowSite(delay_seconds=1.0)
    try:
        fetch = processes.worker("fetch", "fetch")  # the plain command: no -P, no -c
        processes.worker("parse", "parse")
        processes.worker("store", "store")
        processes.beat()
        urls = [f"{slow.url}/item/{i}" for i in range(300)]
        # one host: lift the per-host limit (8 by default) to see the worker's own capacity
        crawl = crawlcluster.submit(urls, project="slow", settings={"per_host_concurrency": 500})
        crawl.wait(timeout=120)
        tasks, _items = load_rows(pg, "slow")
        errors = Counter(row["error"] for row in tasks if row["status"] != "done")
        assert crawl.stats()["done"] == 301, errors  # and robots.txt (404 here)
        assert slow.served == 301
        assert slow.max_in_flight >= 100, slow.max_in_flight
        assert len([pid for pid in processes.pids("fetch")]) == 1  # one process did it (threads pool)
        assert fetch.poll() is None
    finally:
        slow.stop()


def _lease_holder(pg: str) -> tuple[str, int]:
    from sqlalchemy import create_engine, select

    from crawlcluster.schema import scheduler_lease

    engine = create_engine(pg)
    with engine.connect() as conn:
        row = conn.execute(select(scheduler_lease.c.holder, scheduler_lease.c.token)).one()
    engine.dispose()
    return row.holder, row.token


def test_two_beats_one_dispatches_and_the_standby_takes_over_a_killed_leader(site, processes, pg):
    processes.env["CRAWLCLUSTER_QUEUED_DEADLINE_SECONDS"] = "20"
    processes.worker("fetch", "fetch")
    processes.worker("parse", "parse")
    processes.worker("store", "store")
    processes.beat("beat-a")
    processes.beat("beat-b")
    crawl = crawlcluster.submit([site.url + "/"], project="standby")
    deadline = time.monotonic() + 60
    while crawl.stats()["done"] < 30 and time.monotonic() < deadline:
        time.sleep(0.05)
    holder, token = _lease_holder(pg)
    leader = next(name for name in ("beat-a", "beat-b") if f":{processes.procs[name].pid}:" in holder)
    standby = "beat-b" if leader == "beat-a" else "beat-a"
    assert "took the scheduler lease" not in processes.log(standby)  # it never dispatched
    killed_at = time.monotonic()
    processes.kill(leader)
    processes.wait_for_log(standby, "took the scheduler lease", timeout=30)
    assert time.monotonic() - killed_at <= 30
    new_holder, new_token = _lease_holder(pg)
    assert f":{processes.procs[standby].pid}:" in new_holder and new_token == token + 1
    crawl.wait(timeout=240)
    tasks, items = load_rows(pg, "standby")
    # no double dispatch across the change of leader: every page fetched exactly once
    assert_site_crawled(site, tasks, items)
    assert_statistics_equal_rows(pg, "standby")
