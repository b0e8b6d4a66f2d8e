"""Worker faults for real: a fetch, parse or store worker SIGKILLed mid-crawl, a fetch worker
frozen past its lease, a fetch message delivered again after its rows are done.

Real `celery -A crawlcluster` workers and beat on the test Redis and Postgres, a one-host
site of slow pages with a hit log, the DEFAULT queued deadline (600 s): a dead worker's rows
must come back through its expired lease, not the deadline. Each test asserts from the hit
log and the tables: every page stored once, no result doubled, the durable statistics equal
to the row counts, the crawl finished within a generous bound.
"""

from __future__ import annotations

import http.server
import signal
import threading
import time
from collections import Counter

import pytest
from sqlalchemy import create_engine, func, or_, select

import crawlcluster
from crawlcluster.messages import fetch_messages
from crawlcluster.publish import send
from crawlcluster.schema import DONE, crawl_tasks, results, worker_leases
from crawlcluster.stages import FETCH
from tests.outcomes import assert_statistics_equal_rows

PAGES = 120
PAGE_DELAY_SECONDS = 0.25
# the crawl must finish this long after the fault (a lease of 12 s, then the pages left)
FINISH_AFTER_FAULT_SECONDS = 90


class TreeSite:
    """Pages /p/0 .. /p/N-1 on one host, page i linking to 2i+1 and 2i+2, each answered after
    a pause; robots.txt is 404. ``hits`` is the hit log: requests served per path."""

    def __init__(self, pages: int, delay_seconds: float) -> None:
        self.pages = pages
        self.hits: Counter[str] = Counter()
        self.lock = threading.Lock()
        site = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                with site.lock:
                    site.hits[self.path] += 1
                status, body = site.page(self.path)
                if status == 200:
                    time.sleep(delay_seconds)
                self.send_response(status)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 128

            def handle_error(self, request: object, client_address: object) -> None:
                pass  # a killed worker's connections break mid-answer: expected here

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def page(self, path: str) -> tuple[int, bytes]:
        if not path.startswith("/p/") or not path[3:].isdigit() or int(path[3:]) >= self.pages:
            return 404, b"not found"
        n = int(path[3:])
        links = "".join(f'<a href="/p/{k}">{k}</a>' for k in (2 * n + 1, 2 * n + 2) if k < self.pages)
        return 200, f"<html><head><title>page {n}</title></head><body>{links}</body></html>".encode()

    def requests(self) -> int:
        """Page requests served (robots.txt left out)."""
        with self.lock:
            return sum(n for path, n in self.hits.items() if path.startswith("/p/"))

    def repeated(self) -> int:
        """Page requests beyond the first of each page."""
        with self.lock:
            return sum(n - 1 for path, n in self.hits.items() if path.startswith("/p/") and n > 1)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def tree_site():
    site = TreeSite(PAGES, PAGE_DELAY_SECONDS)
    yield site
    site.stop()


def _start(processes, **env: str) -> None:
    processes.env.update(env)
    processes.worker("fetch", "fetch")
    processes.worker("parse", "parse")
    processes.worker("store", "store")
    processes.beat()


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    pytest.fail(f"{what} did not happen within {timeout}s")


def _held_rows(pg: str, project: str, pids: list[int] | None = None) -> int:
    """Queued rows of ``project`` a worker holds right now (with ``pids``: one of these
    processes, whose lease names them ``host:pid``)."""
    engine = create_engine(pg)
    held = crawl_tasks.c.held_by.is_not(None)
    if pids is not None:
        held = or_(*[crawl_tasks.c.held_by.like(f"%:{pid}") for pid in pids])
    with engine.connect() as conn:
        count = conn.execute(select(func.count()).where(
            crawl_tasks.c.project == project, crawl_tasks.c.status == "queued", held)).scalar_one()
    engine.dispose()
    return int(count)


def _wait_finished(crawl, pg: str, processes) -> dict:
    """``crawl.wait()``, failing with the rows still queued and the leases when it times out."""
    try:
        return crawl.wait(timeout=FINISH_AFTER_FAULT_SECONDS)
    except crawlcluster.CrawlTimeout:
        engine = create_engine(pg)
        with engine.connect() as conn:
            queued = [dict(r._mapping) for r in conn.execute(
                select(crawl_tasks.c.url, crawl_tasks.c.held_by, crawl_tasks.c.dispatch_count,
                       crawl_tasks.c.queued_at, crawl_tasks.c.fetched_at)
                .where(crawl_tasks.c.project == crawl.project, crawl_tasks.c.status == "queued"))]
            leases = [tuple(r) for r in conn.execute(select(worker_leases))]
        engine.dispose()
        logs = {name: processes.log(name)[-3000:] for name in processes.procs}
        pytest.fail(f"still queued at {time.time()}: {queued}; leases: {leases}; logs: {logs}")


def assert_exactly_once(pg: str, project: str, site: TreeSite) -> dict[str, int]:
    """Every page done once with one item, statistics equal to the row counts; returns the
    figures."""
    engine = create_engine(pg)
    with engine.connect() as conn:
        by_status = dict(conn.execute(select(crawl_tasks.c.status, func.count())
                                      .where(crawl_tasks.c.project == project)
                                      .group_by(crawl_tasks.c.status)).all())
        items = conn.execute(select(results.c.url, func.count()).where(results.c.project == project)
                             .group_by(results.c.url)).all()
    engine.dispose()
    # every page and robots.txt done, nothing else left
    assert by_status == {DONE: PAGES + 1}, by_status
    assert len(items) == PAGES and all(n == 1 for _, n in items), "a page's result is missing or doubled"
    # the durable statistics count each row's outcome once
    assert_statistics_equal_rows(pg, project)
    # every page was requested
    assert all(site.hits[f"/p/{n}"] >= 1 for n in range(PAGES))
    return {"repeated": site.repeated(), "requests": site.requests()}


@pytest.mark.parametrize("role", ["fetch", pytest.param("parse", marks=pytest.mark.long_fault),
                                  pytest.param("store", marks=pytest.mark.long_fault)])
def test_a_killed_worker_s_rows_come_back_through_its_lease_not_the_deadline(role, tree_site, processes, pg):
    # the default queued deadline (600 s); a 12 s lease instead of 30 s: the rows come back a
    # lease after the kill either way, and the test waits 18 s less
    _start(processes, CRAWLCLUSTER_WORKER_LEASE_SECONDS="12", CRAWLCLUSTER_WORKER_HEARTBEAT_SECONDS="4")
    crawl = crawlcluster.submit([tree_site.url + "/p/0"], project=f"kill-{role}")
    _wait_for(lambda: crawl.stats()["done"] >= 25, 90, "25 pages done")
    if role == "fetch":  # mid-batch: the worker holds rows it is fetching
        _wait_for(lambda: _held_rows(pg, crawl.project) > 0, 30, "a batch held")
    killed_at = time.monotonic()
    processes.kill(role, signal.SIGKILL)
    time.sleep(3)
    processes.worker(f"{role}-again", role)  # a log of its own: the killed one's stays readable
    stats = _wait_finished(crawl, pg, processes)
    recovered_seconds = time.monotonic() - killed_at
    assert stats["pending"] == stats["queued"] == 0, stats
    figures = assert_exactly_once(pg, crawl.project, tree_site)
    print(f"SIGKILL {role}: finished {recovered_seconds:.1f}s after the kill, "
          f"{figures['repeated']} repeated requests of {figures['requests']}")
    assert recovered_seconds < FINISH_AFTER_FAULT_SECONDS
    # what was repeated is at most what the killed worker held and what was handed on from it
    assert figures["repeated"] <= 3 * 8, figures


@pytest.mark.long_fault
def test_a_fetch_worker_frozen_past_its_lease_counts_nothing_twice(tree_site, processes, pg):
    # a short lease so that a 12 s freeze outlives it
    _start(processes, CRAWLCLUSTER_WORKER_LEASE_SECONDS="6", CRAWLCLUSTER_WORKER_HEARTBEAT_SECONDS="2")
    crawl = crawlcluster.submit([tree_site.url + "/p/0"], project="frozen")
    _wait_for(lambda: crawl.stats()["done"] >= 25, 90, "25 pages done")
    # freeze the fetch worker while it holds a batch of its own (one it is fetching, not
    # one it already handed on to parse): stop it, look, and let it go on if it held none
    fetch_pids = processes.pids("fetch")
    for _attempt in range(100):
        processes.signal("fetch", signal.SIGSTOP)
        time.sleep(0.2)
        if _held_rows(pg, crawl.project, fetch_pids) > 0:
            break
        processes.signal("fetch", signal.SIGCONT)
        time.sleep(0.05)
    else:
        pytest.fail("the fetch worker never held a batch when stopped (100 tries)")
    try:
        # the frozen worker's rows come back to pending (and wait for a fetch worker)
        _wait_for(lambda: "whose lease expired, are due again" in processes.log("beat"), 40,
                  "the rows released")
        time.sleep(2)
    finally:
        processes.signal("fetch", signal.SIGCONT)
    stats = _wait_finished(crawl, pg, processes)
    assert stats["pending"] == stats["queued"] == 0, stats
    figures = assert_exactly_once(pg, crawl.project, tree_site)
    print(f"SIGSTOP fetch past its lease: {figures['repeated']} repeated requests of {figures['requests']}")


def test_a_fetch_message_delivered_again_after_its_rows_are_done_fetches_and_counts_nothing(
        tree_site, processes, pg, test_app):
    _start(processes)
    crawl = crawlcluster.submit([tree_site.url + "/p/0"], project="again")
    crawl.wait(timeout=120)
    figures = assert_exactly_once(pg, crawl.project, tree_site)
    hits_before = dict(tree_site.hits)
    engine = create_engine(pg)
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(
            select(crawl_tasks).where(crawl_tasks.c.project == crawl.project,
                                      crawl_tasks.c.url.like("%/p/%")).order_by(crawl_tasks.c.url).limit(8))]
    engine.dispose()
    # the very message the scheduler sent last for these rows (same dispatch), twice
    for message in fetch_messages(crawl.project, rows, 8) * 2:
        send(test_app, FETCH.task, message)
    _wait_for(lambda: processes.log("fetch").count("dropped 8 of 8 pages of again") >= 2, 30,
              "both messages dropped")
    time.sleep(1)  # anything that would have been handed on has been by now
    assert dict(tree_site.hits) == hits_before
    assert assert_exactly_once(pg, crawl.project, tree_site) == figures
