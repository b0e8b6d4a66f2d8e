"""Prometheus metrics: one exporter process (`crawlcluster metrics --port 9808`) that reads
the cluster's durable state on every scrape.

Queue depths come from Redis; rows per state, pages per outcome, bytes, fetch and browser
seconds and the fetch latency histogram from Postgres (the store stage's ``crawl_stats``);
tasks per stage and outcome from a Redis hash every worker increments after each task
(:func:`count_task`), so the figures are cluster-wide and survive restarts of any process.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Iterator

from sqlalchemy import func, select

from crawlcluster import settings
from crawlcluster.stages import QUEUES

logger = logging.getLogger(__name__)

TASKS_KEY = "crawlcluster:metrics:tasks"
_redis_client: Any = None
_redis_lock = threading.Lock()


def _redis() -> Any:
    """A Redis client on the broker, or None for the in-memory embedded transport."""
    global _redis_client
    url = settings.get("broker_url")
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return None
    with _redis_lock:
        if _redis_client is None:
            import redis

            _redis_client = redis.Redis.from_url(url, socket_timeout=2)
    return _redis_client


def count_task(task_name: str, state: str) -> None:
    """Add one finished task of a stage to the cluster-wide counters (best effort)."""
    if not task_name.startswith("crawlcluster."):
        return
    client = _redis()
    if client is None:
        return
    try:
        client.hincrby(settings.get("broker_key_prefix") + TASKS_KEY, f"{task_name.split('.', 1)[1]}:{state.lower()}", 1)
    except Exception:  # noqa: BLE001 - metrics must never fail a task
        logger.debug("could not count task %s", task_name, exc_info=True)


class ClusterCollector:
    """Computes every metric at scrape time from Redis and Postgres."""

    def __init__(self, database_url: str | None = None) -> None:
        self.database_url = database_url

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        from crawlcluster import stats
        from crawlcluster.db import get_engine
        from crawlcluster.schema import crawl_stats, crawl_tasks

        started = time.monotonic()
        prefix = settings.get("broker_key_prefix")
        client = _redis()
        queues = GaugeMetricFamily("crawlcluster_queue_messages", "Messages waiting in each stage's queue", labels=["queue"])
        tasks = CounterMetricFamily("crawlcluster_tasks", "Tasks finished per stage and outcome", labels=["stage", "outcome"])
        if client is not None:
            for queue in QUEUES:
                queues.add_metric([queue], client.llen(prefix + queue))
            for field, value in (client.hgetall(prefix + TASKS_KEY) or {}).items():
                stage, _, outcome = field.decode().partition(":")
                tasks.add_metric([stage, outcome], int(value))
        yield queues
        yield tasks

        engine = get_engine(self.database_url)
        rows = GaugeMetricFamily("crawlcluster_rows", "Rows of crawl_tasks per project and state", labels=["project", "status"])
        pages = CounterMetricFamily("crawlcluster_pages", "Fetched pages per project and outcome", labels=["project", "outcome"])
        downloaded = CounterMetricFamily("crawlcluster_downloaded_bytes", "Bytes downloaded", labels=["project"])
        fetch_seconds = CounterMetricFamily("crawlcluster_fetch_seconds", "Seconds spent fetching", labels=["project"])
        browser_seconds = CounterMetricFamily("crawlcluster_browser_seconds", "Seconds of browser rendering", labels=["project"])
        latency = HistogramMetricFamily("crawlcluster_fetch_latency_seconds", "Fetch latency", labels=["project"])
        with engine.connect() as conn:
            for project, status, count in conn.execute(
                    select(crawl_tasks.c.project, crawl_tasks.c.status, func.count())
                    .group_by(crawl_tasks.c.project, crawl_tasks.c.status)):
                rows.add_metric([project, status], count)
            sums = conn.execute(select(
                crawl_stats.c.project, func.sum(crawl_stats.c.done), func.sum(crawl_stats.c.failed),
                func.sum(crawl_stats.c.retried), func.sum(crawl_stats.c.bytes), func.sum(crawl_stats.c.fetch_seconds),
                func.sum(crawl_stats.c.browser_seconds)).group_by(crawl_stats.c.project)).all()
            histogram = stats.latency_histogram(conn)
        for project, done, failed, retried, nbytes, fetch_s, browser_s in sums:
            for outcome, value in (("done", done), ("failed", failed), ("retried", retried)):
                pages.add_metric([project, outcome], int(value or 0))
            downloaded.add_metric([project], int(nbytes or 0))
            fetch_seconds.add_metric([project], float(fetch_s or 0))
            browser_seconds.add_metric([project], float(browser_s or 0))
        by_project: dict[str, list[tuple[float, int]]] = {}
        for project, bound, count in histogram:
            by_project.setdefault(project, []).append((bound, count))
        for project, buckets in by_project.items():
            cumulative, total = [], 0
            for bound, count in buckets:
                total += count
                cumulative.append(("+Inf" if bound == float("inf") else str(bound), total))
            with engine.connect() as conn:
                seconds = conn.execute(select(func.sum(crawl_stats.c.fetch_seconds))
                                       .where(crawl_stats.c.project == project)).scalar() or 0.0
            latency.add_metric([project], cumulative, sum_value=float(seconds))
        yield from (rows, pages, downloaded, fetch_seconds, browser_seconds, latency)
        scrape = GaugeMetricFamily("crawlcluster_scrape_seconds", "Time this scrape took")
        scrape.add_metric([], time.monotonic() - started)
        yield scrape


def serve(port: int, address: str = "127.0.0.1", database_url: str | None = None) -> Any:
    """Start the exporter's HTTP server in a background thread; returns the server."""
    from prometheus_client import start_http_server
    from prometheus_client.core import REGISTRY

    REGISTRY.register(ClusterCollector(database_url))
    server, _thread = start_http_server(port, addr=address)
    logger.info("metrics on http://%s:%d/metrics", address, port)
    return server
