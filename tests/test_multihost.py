"""crawlcluster across hosts, for real: network namespaces joined by veth links stand in for
machines. A master host runs Redis, Postgres and beat; two worker hosts run fetch, parse and
store workers that reach the master only over the virtual network; a site host serves the
demo site. A crawl submitted through the Python API completes with every page fetched once,
and when one worker host's link goes down mid-crawl the other host finishes the work.

Root and iproute2 are required (CI runs as root); a missing one is a failure, not a skip.
Every process and namespace is removed at the end, whatever happens.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

import crawlcluster
from crawlcluster import db
from crawlcluster.devtools.demo_site import DemoSite
from crawlcluster.devtools.local_cluster import LocalCluster
from tests.netns import VirtualNetwork
from tests.outcomes import assert_site_crawled, load_rows, statistics_and_rows

ROOT = Path(__file__).resolve().parent.parent
HOSTS = {"master": "10.231.0.1", "w1": "10.231.0.11", "w2": "10.231.0.12", "site": "10.231.0.20"}
MASTER = HOSTS["master"]
BROKER_URL = f"redis://{MASTER}:6379/0"
DATABASE_URL = f"postgresql+psycopg2://postgres@{MASTER}:5432/crawlcluster"
SITE_PORT = 8080


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]))
    if not found:
        pytest.fail(f"no PostgreSQL server binaries ({name}); run `bash deploy/local/services.sh`",
                    pytrace=False)
    return found[-1]


def _wait(what: str, check: Callable[[], bool], timeout: float, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise AssertionError(f"{what} not within {timeout}s")


class HostCluster(LocalCluster):
    """LocalCluster whose processes run on the virtual hosts: a name ends with its host."""

    def __init__(self, net: VirtualNetwork, env: dict[str, str], log_dir: Path) -> None:
        super().__init__(env, log_dir=log_dir)
        self.net = net

    def start(self, name: str, *args: str) -> subprocess.Popen:
        host = name.rsplit("-", 1)[1]  # "fetch-w1" runs on w1
        with open(self.log_dir / f"{name}.log", "wb") as log:
            proc = self.net.popen(host, [sys.executable, "-m", "celery", "-A", "crawlcluster", *args],
                                  cwd=self.log_dir, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.procs[name] = proc
        return proc

    def start_worker(self, name: str, queues: str, *extra: str) -> None:
        """Like ``worker`` without waiting: start several, then ``wait_ready`` on each."""
        self.start(name, "worker", "-Q", queues, "-n", f"{name}@%h", "-l", "info",
                   "--without-mingle", "--without-gossip", *extra)


class Master:
    """The master host's own Redis and Postgres (a temporary cluster made with initdb)."""

    def __init__(self, net: VirtualNetwork, log_dir: Path) -> None:
        self.net = net
        self.log_dir = log_dir
        self.data_dir: str | None = None
        self.redis: subprocess.Popen | None = None
        self.postgres: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log_dir / "redis.log", "wb") as log:
            self.redis = self.net.popen("master", [
                "redis-server", "--bind", MASTER, "--port", "6379", "--save", "", "--appendonly", "no",
                "--protected-mode", "no", "--tcp-keepalive", "5"], stdout=log, stderr=subprocess.STDOUT)
        # initdb refuses to run as root: the data directory belongs to the postgres user
        self.data_dir = tempfile.mkdtemp(prefix="crawlcluster-netns-pg-")
        shutil.chown(self.data_dir, "postgres", "postgres")
        as_postgres = ["setpriv", "--reuid=postgres", "--regid=postgres", "--clear-groups", "--reset-env"]
        initdb = subprocess.run([*as_postgres, _pg_bin("initdb"), "-D", self.data_dir, "-U", "postgres",
                                 "--auth=trust", "-E", "UTF8", "--no-sync"],
                                capture_output=True, text=True, timeout=120, cwd="/")
        assert initdb.returncode == 0, initdb.stderr
        with open(os.path.join(self.data_dir, "pg_hba.conf"), "a") as hba:
            hba.write(f"host all all {MASTER.rsplit('.', 1)[0]}.0/24 trust\n")
        with open(self.log_dir / "postgres.log", "wb") as log:
            # the keepalive settings let Postgres notice a worker host that vanished and
            # roll back its open transaction instead of holding row locks for hours
            self.postgres = self.net.popen("master", [
                *as_postgres, _pg_bin("postgres"), "-D", self.data_dir,
                "-c", f"listen_addresses={MASTER}", "-c", "port=5432",
                "-c", f"unix_socket_directories={self.data_dir}", "-c", "max_connections=200",
                "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                "-c", "tcp_keepalives_idle=2", "-c", "tcp_keepalives_interval=1",
                "-c", "tcp_keepalives_count=3", "-c", "tcp_user_timeout=5000"],
                stdout=log, stderr=subprocess.STDOUT, cwd="/")
        _wait("postgres on the master host", lambda: self.net.run(
            "master", [_pg_bin("pg_isready"), "-h", MASTER, "-p", "5432", "-q"]).returncode == 0, 30)
        created = self.net.run("master", [_pg_bin("psql"), "-h", MASTER, "-U", "postgres", "-c",
                                          "CREATE DATABASE crawlcluster"])
        assert created.returncode == 0, created.stderr
        _wait("redis on the master host", lambda: self.net.run(
            "master", ["redis-cli", "-h", MASTER, "ping"]).stdout.strip() == "PONG", 30)

    def stop(self) -> None:
        if self.postgres is not None and self.postgres.poll() is None:
            self.postgres.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.postgres.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.postgres.pid, signal.SIGKILL)
                self.postgres.wait(timeout=10)
        if self.redis is not None and self.redis.poll() is None:
            self.redis.kill()
            self.redis.wait(timeout=10)
        if self.data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)


class Client:
    """The Python API, run from a thread that lives on the master host's network."""

    def __init__(self, net: VirtualNetwork) -> None:
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="on-master",
                                       initializer=net.enter_for_good, initargs=("master",))

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self.pool.submit(fn, *args, **kwargs).result(timeout=120)

    def submit(self, url: str, project: str) -> crawlcluster.Crawl:
        return self.call(crawlcluster.submit, [url], project=project, database_url=DATABASE_URL)

    def stats(self, crawl: crawlcluster.Crawl) -> dict[str, Any]:
        return self.call(crawl.stats)

    def rows(self, project: str):
        return self.call(load_rows, DATABASE_URL, project)

    def close(self) -> None:
        try:
            self.call(db.dispose_all)
        finally:
            self.pool.shutdown(wait=True)


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[tuple[VirtualNetwork, Master, HostCluster, Any, Client]]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.fail("the multi-host test needs root and iproute2 (ip netns)", pytrace=False)
    net = VirtualNetwork(f"cc{os.getpid()}", HOSTS)
    master = Master(net, tmp_path)
    servers: list[Any] = []
    client = None
    cluster = None
    with net:
        try:
            master.start()
            with net.entered("site"):  # the listening sockets live on the site host
                # one site per crawl: robots.txt is fetched once per host, across projects
                servers = [DemoSite(pages=300, traps=True).serve(HOSTS["site"], SITE_PORT + n)
                           for n in range(2)]
            env = dict(os.environ)
            env.update({
                "CRAWLCLUSTER_BROKER_URL": BROKER_URL,
                "CRAWLCLUSTER_DATABASE_URL": DATABASE_URL,
                "CRAWLCLUSTER_FETCH_BATCH_SIZE": "4",
                "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
                "PYTHONUNBUFFERED": "1",
            })
            cluster = HostCluster(net, env, tmp_path)
            client = Client(net)
            yield net, master, cluster, servers, client
        finally:
            if cluster is not None:
                # the cut-off host cannot finish a warm shutdown: kill it outright
                for name in [n for n in cluster.procs if n.endswith("-w1")]:
                    cluster.kill(name)
                cluster.stop_all(timeout=15)
            if client is not None:
                client.close()
            for server in servers:
                server.stop()
            master.stop()


def _wait_idle(client: Client, crawl: crawlcluster.Crawl, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = client.stats(crawl)
        if stats["pending"] == stats["queued"] == 0:
            return stats
        time.sleep(0.3)
    raise AssertionError(f"{crawl.project} not finished within {timeout}s: {client.stats(crawl)}")


def _received(cluster: HostCluster, name: str, since: int = 0) -> int:
    return cluster.log(name)[since:].count("] received")


def _in_hand(cluster: HostCluster, host: str) -> int:
    """Tasks a host's workers have taken from the broker and not yet finished (from their logs)."""
    logs = [cluster.log(f"{role}-{host}") for role in ("fetch", "parse", "store")]
    return sum(log.count("] received") - log.count("] succeeded in") - log.count("] raised") for log in logs)


@pytest.mark.long_fault
def test_two_worker_hosts_crawl_once_and_one_host_cut_off_mid_crawl_loses_nothing(hosts):
    net, master, cluster, (site, second_site), client = hosts
    started = time.monotonic()
    workers = [f"{role}-{host}" for host in ("w1", "w2") for role in ("fetch", "parse", "store")]
    for name in workers:
        role = name.split("-")[0]
        cluster.start_worker(name, role, *(["-c", "1"] if role == "parse" else []))
    for name in workers:
        cluster.wait_for_log(name, "ready.", timeout=90)
    cluster.beat("beat-master")

    # the workers' only route to the master is the virtual network
    for host in ("w1", "w2"):
        assert net.run(host, ["ip", "-o", "-4", "addr"]).stdout.count("inet ") == 2  # lo and eth0
        assert net.run(host, ["redis-cli", "-h", MASTER, "ping"]).stdout.strip() == "PONG"

    # 1. a whole crawl across both worker hosts: every page fetched exactly once
    crawl = client.submit(site.url + "/", "hosts")
    stats = _wait_idle(client, crawl, timeout=150)
    tasks, items = client.rows("hosts")
    assert_site_crawled(site, tasks, items)
    assert stats["done"] + stats["failed"] == len(tasks)
    for host in ("w1", "w2"):  # both hosts did their share of each stage
        for role in ("fetch", "parse", "store"):
            assert _received(cluster, f"{role}-{host}") > 0, f"{role}-{host} got no task"
    first_seconds = time.monotonic() - started

    # 2. a second crawl, with a scheduler that re-sends rows queued longer than 10 s; w1's
    # link goes down mid-crawl and w2 must finish everything
    cluster.kill("beat-master", signal.SIGTERM)
    cluster.env["CRAWLCLUSTER_QUEUED_DEADLINE_SECONDS"] = "10"
    cluster.beat("beat2-master")
    site = second_site
    crawl = client.submit(site.url + "/", "cut")
    _wait("40 pages done before the cut", lambda: client.stats(crawl)["done"] >= 40, timeout=90,
          interval=0.05)
    # cut w1 off while it holds work: those messages are lost with it
    held_at_cut: list[int] = []
    _wait("w1 holding a task", lambda: held_at_cut.append(_in_hand(cluster, "w1")) or held_at_cut[-1] > 0,
          timeout=30, interval=0.01)
    net.link_down("w1")
    cut_at = time.monotonic()
    held = held_at_cut[-1]
    offsets = {name: len(cluster.log(name)) for name in workers}
    before = client.stats(crawl)
    assert before["pending"] + before["queued"] > 0, before
    stats = _wait_idle(client, crawl, timeout=150)
    recovery_seconds = time.monotonic() - cut_at
    tasks, items = client.rows("cut")
    # pages w1 held when it vanished are fetched again by w2: nothing lost, nothing stored twice
    assert_site_crawled(site, tasks, items, exactly_once=False)
    counted, row_counts = client.call(statistics_and_rows, DATABASE_URL, "cut")
    assert counted == row_counts, (counted, row_counts)  # and counted once in the statistics
    assert stats["done"] + stats["failed"] == len(tasks)
    for role in ("fetch", "parse", "store"):
        assert _received(cluster, f"{role}-w2", offsets[f"{role}-w2"]) > 0, \
            f"{role}-w2 did nothing after the cut"
    refetched = sum(n - 1 for n in site.hits().values() if n > 1)
    print(f"\nmulti-host: first crawl {first_seconds:.1f}s (with start-up), cut-off crawl finished "
          f"{recovery_seconds:.1f}s after the cut, {refetched} pages fetched again; "
          f"done at the cut {before['done']}, tasks w1 held {held}")
