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

from crawlcluster import settings
from crawlcluster.settings import Settings
from crawlcluster.stages import QUEUES

logger = logging.getLogger(__name__)

TASKS_KEY = "crawlcluster:metrics:tasks"
_redis_client: Any = None
_redis_lock = threading.Lock()


def _redis(url: str) -> Any:
    """A Redis client on the broker at ``url``, or None for the in-memory embedded transport."""
    global _redis_client
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
    own = settings.current()
    client = _redis(own.broker_url)
    if client is None:
        return
    try:
        field = f"{task_name.split('.', 1)[1]}:{state.lower()}"
        client.hincrby(own.broker_key_prefix + TASKS_KEY, field, 1)
    except Exception:  # noqa: BLE001 - metrics must never fail a task
        logger.debug("could not count task %s", task_name, exc_info=True)


def queue_depths(broker_url: str, key_prefix: str) -> dict[str, int] | None:
    """Messages waiting in each stage's queue (Redis lists), None for the embedded in-memory
    transport; what the exporter's ``crawlcluster_queue_messages`` and the console show."""
    client = _redis(broker_url)
    if client is None:
        return None
    return {queue: int(client.llen(key_prefix + queue)) for queue in QUEUES}


class ClusterCollector:
    """Computes every metric at scrape time from Redis and Postgres."""

    def __init__(self, database_url: str | None = None, *, broker_url: str, key_prefix: str) -> None:
        self.database_url = database_url
        self.broker_url = broker_url
        self.key_prefix = key_prefix

    @classmethod
    def from_settings(cls, s: Settings, database_url: str | None = None) -> ClusterCollector:
        return cls(database_url, broker_url=s.broker_url, key_prefix=s.broker_key_prefix)

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        from crawlcluster.database import stats
        from crawlcluster.database.counts import rows_by_project_and_state
        from crawlcluster.db import get_engine

        started = time.monotonic()
        prefix = self.key_prefix
        client = _redis(self.broker_url)
        queues = GaugeMetricFamily("crawlcluster_queue_messages", "Messages waiting in each stage's queue",
                                   labels=["queue"])
        tasks = CounterMetricFamily("crawlcluster_tasks", "Tasks finished per stage and outcome",
                                    labels=["stage", "outcome"])
        if client is not None:
            for queue, depth in (queue_depths(self.broker_url, prefix) or {}).items():
                queues.add_metric([queue], depth)
            for field, value in (client.hgetall(prefix + TASKS_KEY) or {}).items():
                stage, _, outcome = field.decode().partition(":")
                tasks.add_metric([stage, outcome], int(value))
        yield queues
        yield tasks

        engine = get_engine(self.database_url)
        rows = GaugeMetricFamily("crawlcluster_rows", "Rows of crawl_tasks per project and state",
                                 labels=["project", "status"])
        pages = CounterMetricFamily("crawlcluster_pages", "Fetched pages per project and outcome",
                                    labels=["project", "outcome"])
        downloaded = CounterMetricFamily("crawlcluster_downloaded_bytes", "Bytes downloaded",
                                         labels=["project"])
        fetch_seconds = CounterMetricFamily("crawlcluster_fetch_seconds", "Seconds spent fetching",
                                            labels=["project"])
        browser_seconds = CounterMetricFamily("crawlcluster_browser_seconds", "Seconds of browser rendering",
                                              labels=["project"])
        latency = HistogramMetricFamily("crawlcluster_fetch_latency_seconds", "Fetch latency",
                                        labels=["project"])
        with engine.connect() as conn:
            for project, status, count in rows_by_project_and_state(conn):
                rows.add_metric([project, status], count)
            totals = stats.project_totals(conn)
            histogram = stats.latency_histogram(conn)
        fetch_seconds_of: dict[str, float] = {}
        for project, done, failed, retried, nbytes, fetch_s, browser_s in totals:
            for outcome, value in (("done", done), ("failed", failed), ("retried", retried)):
                pages.add_metric([project, outcome], value)
            downloaded.add_metric([project], nbytes)
            fetch_seconds.add_metric([project], fetch_s)
            browser_seconds.add_metric([project], browser_s)
            fetch_seconds_of[project] = fetch_s
        by_project: dict[str, list[tuple[float, int]]] = {}
        for project, bound, count in histogram:
            by_project.setdefault(project, []).append((bound, count))
        for project, buckets in by_project.items():
            cumulative, total = [], 0
            for bound, count in buckets:
                total += count
                cumulative.append(("+Inf" if bound == float("inf") else str(bound), total))
            # the histogram's sum: the project's fetch seconds, read with the totals above
            latency.add_metric([project], cumulative, sum_value=fetch_seconds_of.get(project, 0.0))
        yield from (rows, pages, downloaded, fetch_seconds, browser_seconds, latency)
        scrape = GaugeMetricFamily("crawlcluster_scrape_seconds", "Time this scrape took")
        scrape.add_metric([], time.monotonic() - started)
        yield scrape


def serve(port: int, address: str = "127.0.0.1", database_url: str | None = None) -> Any:
    """Start the exporter's HTTP server in a background thread; returns the server."""
    from prometheus_client import start_http_server
    from prometheus_client.core import REGISTRY

    REGISTRY.register(ClusterCollector.from_settings(settings.current(), database_url))
    server, _thread = start_http_server(port, addr=address)
    logger.info("metrics on http://%s:%d/metrics", address, port)
    return server
