"""The supervisor recipe run for real: supervisord starts deploy/supervisor/'s master node
(beat, Flower) and worker node (fetch, parse, store) against the test Redis and Postgres,
a crawl of the demo site completes, and stopping and starting a worker role mid-crawl with
supervisorctl loses nothing."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

import crawlcluster
from tests.outcomes import assert_site_crawled, assert_statistics_equal_rows, load_rows
from tests.queues import free_port

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "deploy" / "supervisor" / "supervisord.conf"


class SupervisorNode:
    """One node of the recipe: `supervisord -c deploy/supervisor/supervisord.conf` with
    CRAWLCLUSTER_NODE naming the node type, its own log directory and socket."""

    def __init__(self, node: str, env: dict[str, str], log_dir: Path) -> None:
        self.node = node
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        self.env = dict(env, CRAWLCLUSTER_NODE=node, CRAWLCLUSTER_LOG_DIR=str(log_dir))
        self.proc: subprocess.Popen | None = None
        self.child_pids: set[int] = set()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "supervisor.supervisord", "-n", "-c", str(CONF)],
            env=self.env, stdout=open(self.log_dir / "supervisord.out", "wb"), stderr=subprocess.STDOUT,
            start_new_session=True)

    def ctl(self, *args: str, timeout: float = 150) -> str:
        done = subprocess.run([sys.executable, "-m", "supervisor.supervisorctl", "-c", str(CONF), *args],
                              env=self.env, capture_output=True, text=True, timeout=timeout)
        return done.stdout + done.stderr

    def statuses(self) -> dict[str, str]:
        found = {}
        for line in self.ctl("status", timeout=20).splitlines():
            parts = line.split()
            if len(parts) >= 2 and ":" in parts[0]:
                found[parts[0]] = parts[1]
        return found

    def wait_running(self, programs: set[str], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        statuses: dict[str, str] = {}
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.tail("supervisord.out")
            statuses = self.statuses()
            if programs <= set(statuses) and all(statuses[p] == "RUNNING" for p in programs):
                self._remember_pids()
                return
            time.sleep(0.5)
        raise AssertionError(f"{self.node} node programs not RUNNING after {timeout}s: {statuses}\n"
                             + self.tail("supervisord.log"))

    def _remember_pids(self) -> None:
        for line in self.ctl("pid", "all", timeout=20).splitlines():
            if line.strip().isdigit():
                self.child_pids.add(int(line))

    def log(self, name: str) -> str:
        path = self.log_dir / name
        return path.read_text(errors="replace") if path.exists() else ""

    def tail(self, name: str) -> str:
        return f"--- {name}:\n" + self.log(name)[-3000:]

    def wait_for_log(self, name: str, needle: str, count: int = 1, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log(name).count(needle) >= count:
                return
            time.sleep(0.2)
        raise AssertionError(f"{name} did not log {needle!r} {count}x in {timeout}s\n{self.tail(name)}")

    def stop(self) -> None:
        """supervisorctl shutdown (each program's warm stop), then make sure by PID."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.ctl("shutdown", timeout=150)
                self.proc.wait(timeout=150)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        for pid in self.child_pids:  # programs run in process groups of their own
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


@pytest.fixture
def supervisor_env(pg: str, redis_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "CRAWLCLUSTER_DATABASE_URL": pg,
        "CRAWLCLUSTER_BROKER_URL": redis_url,
        # the session's own key prefix comes with os.environ (tests/conftest.py)
        "CRAWLCLUSTER_QUEUED_DEADLINE_SECONDS": "10",
        "CRAWLCLUSTER_FETCH_BATCH_SIZE": "4",
        "FLOWER_PORT": str(free_port()),
        "FLOWER_ADDRESS": "127.0.0.1",
        "CRAWLCLUSTER_WEB_PORT": str(free_port()),
        "CRAWLCLUSTER_WEB_AUTH": "admin:console-test-5e1a",
        # `celery` in the commands is this interpreter's, and the checkout is importable
        "PATH": os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")]),
        "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "PYTHONUNBUFFERED": "1",
    })
    return env


@pytest.fixture
def nodes(supervisor_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[SupervisorNode, SupervisorNode]]:
    master = SupervisorNode("master", supervisor_env, tmp_path / "master")
    worker = SupervisorNode("worker", supervisor_env, tmp_path / "worker")
    try:
        yield master, worker
    finally:
        worker.stop()
        master.stop()


@pytest.mark.long_fault
def test_supervisor_nodes_crawl_and_a_worker_role_stopped_and_started_mid_crawl_loses_nothing(
        site, nodes, pg):
    master, worker = nodes
    worker.start()
    master.start()
    worker.wait_running({"worker:crawlcluster-fetch", "worker:crawlcluster-parse",
                         "worker:crawlcluster-store"})
    master.wait_running({"master:crawlcluster-beat", "master:crawlcluster-flower", "master:crawlcluster-web"})
    for role in ("fetch", "parse", "store"):
        worker.wait_for_log(f"{role}.log", "ready.")

    crawl = crawlcluster.submit([site.url + "/"], project="supervised")
    deadline = time.monotonic() + 120
    while crawl.stats()["done"] < 40 and time.monotonic() < deadline:
        time.sleep(0.05)
    before = crawl.stats()
    assert before["done"] >= 40 and before["pending"] + before["queued"] > 0, before

    assert "stopped" in worker.ctl("stop", "worker:crawlcluster-fetch")
    assert worker.statuses()["worker:crawlcluster-fetch"] == "STOPPED"
    assert "Warm shutdown" in worker.log("fetch.log") or "warm shutdown" in worker.log("fetch.log").lower()
    assert "started" in worker.ctl("start", "worker:crawlcluster-fetch")
    worker.wait_for_log("fetch.log", "ready.", count=2)
    worker._remember_pids()

    stats = crawl.wait(timeout=240)
    tasks, items = load_rows(pg, "supervised")
    # pages the stopped worker had taken may be fetched twice; none is lost or stored twice
    assert_site_crawled(site, tasks, items, exactly_once=False)
    assert_statistics_equal_rows(pg, "supervised")
    assert stats["pending"] == stats["queued"] == 0
    assert stats["done"] + stats["failed"] == len(tasks)

    # a log file per program, each written by its own program
    assert "beat" in master.log("beat.log").lower()
    assert "crawlcluster.fetch" in worker.log("fetch.log")
    assert "crawlcluster.parse" in worker.log("parse.log")
    assert "crawlcluster.store" in worker.log("store.log")
    port = master.env["FLOWER_PORT"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthcheck", timeout=10) as response:
        assert response.read() == b"OK"
    # the crawl console: basic auth on every page, the project listed behind it
    console = f"http://127.0.0.1:{master.env['CRAWLCLUSTER_WEB_PORT']}/"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(console, timeout=10)
    assert refused.value.code == 401
    login = "Basic " + base64.b64encode(master.env["CRAWLCLUSTER_WEB_AUTH"].encode()).decode()
    with urllib.request.urlopen(urllib.request.Request(console, headers={"Authorization": login}),
                                timeout=10) as response:
        assert b'data-project="supervised"' in response.read()
