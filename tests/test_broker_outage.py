"""Fault tests: the broker (Redis) or the database (Postgres) goes away mid-crawl and comes back.

A cluster of real processes (fetch, parse and store workers and beat, via LocalCluster)
crawls a 250-page local site against a private redis-server or a private Postgres cluster
(crawlcluster/devtools/private_services.py), so restarting them touches nothing another session uses.
When about 30% of the pages are stored the service is restarted; the crawl must then
finish by itself with every page stored exactly once, and no process may have exited.
The Redis tests run with the default queued deadline (600 s): recovery must come from
beat noticing the restart (also a beat started only after Redis restarted, from the run id
the former leader stored), not from waiting out the deadline.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import pytest
import redis

import crawlcluster
from crawlcluster import db, settings
from crawlcluster.devtools.demo_site import DemoSite
from crawlcluster.devtools.local_cluster import LocalCluster
from crawlcluster.devtools.private_services import PrivatePostgres, PrivateRedis
from crawlcluster.dispatch.broker_watch import BrokerWatch, resend_after_restart
from crawlcluster.dispatch.lease import LeaderLease, LeaseLost
from tests.conftest import cluster_env
from tests.outcomes import assert_site_crawled, assert_statistics_equal_rows, load_rows

PAGES = 250
FINISH_TIMEOUT_SECONDS = 180  # generous: a healthy run finishes well within a minute of the fault
ROLES = ("fetch", "parse", "store")
# well below the default 600 s queued deadline, which alone would bring the lost rows back
RESTARTED_BEAT_TIMEOUT_SECONDS = 120


@pytest.fixture
def small_site() -> Iterator[Any]:
    server = DemoSite(pages=PAGES, traps=True).serve()
    yield server
    server.stop()


def _cluster(tmp_path: Path, broker_url: str, database_url: str, **extra: str) -> LocalCluster:
    env = cluster_env(database_url, broker_url)
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


def _assert_all_alive(cluster: LocalCluster, stopped: tuple[str, ...] = ()) -> None:
    """No process exited on its own (``stopped`` names those the test stopped)."""
    exited = {name: proc.returncode for name, proc in cluster.procs.items()
              if name not in stopped and proc.poll() is not None}
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


class RunIds:
    """A broker whose run id the test sets; ``None`` makes it unreachable."""

    def __init__(self, run_id: str | None) -> None:
        self.run_id = run_id

    def __call__(self) -> str:
        if self.run_id is None:
            raise ConnectionError("Connection refused")
        return self.run_id


def test_a_watch_starting_from_a_remembered_run_id_sees_a_restart_at_its_first_check() -> None:
    broker = RunIds("after")
    watch = BrokerWatch("redis://unused", run_id_of=broker, check_seconds=2.0, remembered="before")
    assert watch.restarted(100.0)
    assert (watch.run_id, watch.restarts, watch.unremembered) == ("after", 1, "after")
    assert not watch.restarted(101.0)  # not due yet
    assert not watch.restarted(102.0)  # the same run id again


def test_resend_after_restart_stores_the_first_run_id_and_resends_only_after_a_change() -> None:
    broker = RunIds("first")
    watch = BrokerWatch("redis://unused", run_id_of=broker, check_seconds=1.0)
    calls: list[tuple[str, float | None]] = []

    def record(run_id: str, before: float | None) -> int:
        calls.append((run_id, before))
        return 0 if before is None else 7

    assert resend_after_restart(watch, 10.0, record) == 0  # the first-ever start: only stored
    assert resend_after_restart(watch, 11.0, record) == 0  # unchanged: nothing written
    broker.run_id = None
    assert resend_after_restart(watch, 12.0, record) == 0  # unreachable: nothing written
    broker.run_id = "second"
    assert resend_after_restart(watch, 13.0, record) == 7
    assert calls == [("first", None), ("second", 13.0)]
    assert watch.remembered == "second"


def test_a_restart_whose_record_failed_is_resent_at_the_next_check() -> None:
    watch = BrokerWatch("redis://unused", run_id_of=RunIds("second"), check_seconds=1.0,
                        remembered="first")
    calls: list[tuple[str, float | None]] = []

    def failing(run_id: str, before: float | None) -> int:
        raise LeaseLost("moved")

    def record(run_id: str, before: float | None) -> int:
        calls.append((run_id, before))
        return 3

    with pytest.raises(LeaseLost):
        resend_after_restart(watch, 10.0, failing)
    assert resend_after_restart(watch, 11.0, record) == 3
    assert calls == [("second", 11.0)]


def test_the_lease_row_keeps_the_broker_run_id_for_the_next_leader(pg: str) -> None:
    engine = db.get_engine(pg)
    first, second = LeaderLease(30.0, holder="first"), LeaderLease(30.0, holder="second")
    with engine.begin() as conn:
        assert first.acquire_or_renew(conn)
        assert first.stored_broker_run_id(conn) is None  # the first-ever start
        first.store_broker_run_id(conn, "run-1")
        first.release(conn)
    with engine.begin() as conn:
        assert second.acquire_or_renew(conn)
        assert second.stored_broker_run_id(conn) == "run-1"
    with engine.begin() as conn, pytest.raises(LeaseLost):  # a deposed leader stores nothing
        first.token = 1
        first.store_broker_run_id(conn, "stale")
    with engine.begin() as conn:
        assert second.stored_broker_run_id(conn) == "run-1"


def _stored_run_id(database_url: str) -> str | None:
    with db.get_engine(database_url).begin() as conn:
        return LeaderLease(30.0).stored_broker_run_id(conn)


def _run_id(broker_url: str) -> str:
    client = redis.Redis.from_url(broker_url)
    try:
        return str(client.info("server")["run_id"])
    finally:
        client.close()


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


@pytest.mark.long_fault
def test_a_beat_started_after_redis_restarted_empty_still_resends_what_redis_lost(
        small_site: Any, pg: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Beat stopped, Redis restarted empty, beat started again: the new leader compares
    Redis's run id with the one the former leader stored, so the rows queued before the
    restart are sent again at once, well before their default 600 s deadline."""
    with PrivateRedis(tmp_path) as broker:
        monkeypatch.setenv("CRAWLCLUSTER_BROKER_URL", broker.url)
        monkeypatch.delenv("CRAWLCLUSTER_QUEUED_DEADLINE_SECONDS", raising=False)
        settings.reset()
        with _cluster(tmp_path, broker.url, pg) as cluster:
            _start(cluster)
            crawl = crawlcluster.submit([small_site.url + "/"], project="outage")
            total = len(small_site.site.reachable()) + 1
            _wait_for_done(crawl, 0.3, total)
            assert _stored_run_id(pg) == _run_id(broker.url)
            cluster.kill("beat", signal.SIGTERM)
            broker.restart_empty()
            restarted_at = time.monotonic()
            cluster.beat("beat-after")
            stats = crawl.wait(timeout=RESTARTED_BEAT_TIMEOUT_SECONDS)
            recovered_seconds = time.monotonic() - restarted_at
            _assert_all_alive(cluster, stopped=("beat",))
            assert "the broker restarted" in cluster.log("beat-after"), cluster.log("beat-after")[-3000:]
            assert _stored_run_id(pg) == _run_id(broker.url)
        assert stats["pending"] == stats["queued"] == 0
        repeats = _assert_crawled_once(small_site, pg)
        print(f"beat started after redis restarted empty: finished {recovered_seconds:.1f}s after the "
              f"restart, {sum(repeats.values())} repeated requests")


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
