"""Fault tests: the broker (Redis) or the database (Postgres) goes away mid-crawl and comes back.

A cluster of real processes (fetch, parse and store workers and beat, via LocalCluster)
crawls a 250-page local site against a private redis-server or a private Postgres cluster
(crawlcluster/devtools/private_services.py), so restarting them touches nothing another session uses.
When about 30% of the pages are stored the service is restarted; the crawl must then
finish by itself with every page stored exactly once, and no process may have exited.
The Redis test runs with the default queued deadline (600 s): recovery must come from
beat noticing the restart, not from waiting out the deadline.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import pytest

import crawlcluster
from crawlcluster import db, settings
from crawlcluster.devtools.demo_site import DemoSite
from crawlcluster.devtools.local_cluster import LocalCluster
from crawlcluster.devtools.private_services import PrivatePostgres, PrivateRedis
from tests.conftest import ROOT
from tests.outcomes import assert_site_crawled, assert_statistics_equal_rows, load_rows

PAGES = 250
FINISH_TIMEOUT_SECONDS = 180  # generous: a healthy run finishes well within a minute of the fault
ROLES = ("fetch", "parse", "store")


@pytest.fixture
def small_site() -> Iterator[Any]:
    server = DemoSite(pages=PAGES, traps=True).serve()
    yield server
    server.stop()


def _cluster(tmp_path: Path, broker_url: str, database_url: str, **extra: str) -> LocalCluster:
    env = dict(os.environ)
    env.update({
        "CRAWLCLUSTER_DATABASE_URL": database_url,
        "CRAWLCLUSTER_BROKER_URL": broker_url,
        "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "PYTHONUNBUFFERED": "1",
    })
    env.pop("CRAWLCLUSTER_QUEUED_DEADLINE_SECONDS", None)  # the default, unless a test names one
    env.update(extra)
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    return LocalCluster(env, log_dir=logs, inherit_env=False)


def _start(cluster: LocalCluster) -> None:
    for role in ROLES:
        cluster.worker(role, role)
    cluster.beat()


def _wait_for_done(crawl: crawlcluster.Crawl, fraction: float, total: int, timeout: float = 120) -> int:
    """Poll until ``fraction`` of ``total`` rows are done; the number done."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = crawl.stats(figures=False, waiting=False)["done"]
        if done >= fraction * total:
            return done
        time.sleep(0.2)
    raise AssertionError(f"fewer than {fraction:.0%} of {total} rows done within {timeout}s")


def _assert_all_alive(cluster: LocalCluster) -> None:
    exited = {name: proc.returncode for name, proc in cluster.procs.items() if proc.poll() is not None}
    assert not exited, f"processes exited: {exited}\n" + "\n".join(
        f"--- {name}\n{cluster.log(name)[-3000:]}" for name in exited)


def _assert_crawled_once(server: Any, database_url: str) -> Counter[str]:
    """Every page stored exactly once; the site's hit log may repeat pages whose message
    the outage took (they are fetched again). Returns the repeated requests."""
    tasks, items = load_rows(database_url, "outage")
    assert_site_crawled(server, tasks, items, exactly_once=False)
    assert {row["status"] for row in tasks} <= {"done", "failed"}
    assert_statistics_equal_rows(database_url, "outage")
    return Counter({target: n - 1 for target, n in server.hits().items() if n > 1})


def test_redis_restarted_empty_mid_crawl_every_process_survives_and_every_page_is_stored_once(
        small_site: Any, pg: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with PrivateRedis(tmp_path) as broker:
        monkeypatch.setenv("CRAWLCLUSTER_BROKER_URL", broker.url)
        monkeypatch.delenv("CRAWLCLUSTER_QUEUED_DEADLINE_SECONDS", raising=False)
        settings.reset()
        with _cluster(tmp_path, broker.url, pg) as cluster:
            _start(cluster)
            crawl = crawlcluster.submit([small_site.url + "/"], project="outage")
            total = len(small_site.site.reachable()) + 1
            _wait_for_done(crawl, 0.3, total)
            broker.restart_empty()
            restarted_at = time.monotonic()
            stats = crawl.wait(timeout=FINISH_TIMEOUT_SECONDS)
            recovered_seconds = time.monotonic() - restarted_at
            _assert_all_alive(cluster)
            assert "restarted" in cluster.log("beat"), cluster.log("beat")[-3000:]
        assert stats["pending"] == stats["queued"] == 0
        repeats = _assert_crawled_once(small_site, pg)
        print(f"redis restarted empty: finished {recovered_seconds:.1f}s after the restart, "
              f"{sum(repeats.values())} repeated requests")


def test_postgres_restarted_mid_crawl_every_process_survives_and_every_page_is_stored_once(
        small_site: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with PrivatePostgres() as database, PrivateRedis(tmp_path) as broker:
        db.dispose_all()
        monkeypatch.setenv("CRAWLCLUSTER_DATABASE_URL", database.url)
        monkeypatch.setenv("CRAWLCLUSTER_BROKER_URL", broker.url)
        settings.reset()
        db.get_engine(database.url)
        with _cluster(tmp_path, broker.url, database.url,
                      CRAWLCLUSTER_QUEUED_DEADLINE_SECONDS="30") as cluster:
            _start(cluster)
            crawl = crawlcluster.submit([small_site.url + "/"], project="outage")
            total = len(small_site.site.reachable()) + 1
            _wait_for_done(crawl, 0.3, total)
            db.dispose_all()
            database.stop_for(15.0)
            restarted_at = time.monotonic()
            stats = crawl.wait(timeout=FINISH_TIMEOUT_SECONDS)
            recovered_seconds = time.monotonic() - restarted_at
            _assert_all_alive(cluster)
        assert stats["pending"] == stats["queued"] == 0
        repeats = _assert_crawled_once(small_site, db.normalize_database_url(database.url))
        db.dispose_all()
        print(f"postgres down 15 s: finished {recovered_seconds:.1f}s after it came back, "
              f"{sum(repeats.values())} repeated requests")
