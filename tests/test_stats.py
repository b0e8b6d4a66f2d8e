"""Durable statistics checked against a crawl of known size: exact counts, bytes equal to
what the site served, the Prometheus endpoint scraped and parsed, `status --json`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

import crawlcluster
from crawlcluster.devtools.demo_site import DemoSite
from tests.queues import free_port

CLI = [sys.executable, "-m", "crawlcluster.cli"]


def test_stats_metrics_and_status_match_a_crawl_of_known_size(processes, pg):
    site = DemoSite(pages=40, traps=True)
    with site.serve() as server:
        processes.worker("all", "fetch,parse,store")
        processes.beat()
        crawl = crawlcluster.submit([server.url + "/"], project="known")
        stats = crawl.wait(timeout=120)
        hits = server.hits()
        served_bytes = sum(len(resp.body) for target in hits
                           for resp in [site.respond(target, server.host, server.port)] if resp.status == 200)

    page_fetches = sum(hits.values()) - hits["/robots.txt"]
    assert stats["windows"]["all"] == {"done": stats["done"], "failed": stats["failed"], "retried": 0}
    assert stats["windows"]["5m"] == stats["windows"]["all"]
    assert stats["bytes"] == served_bytes
    assert stats["fetches"] == page_fetches
    assert stats["fetch_seconds"] > 0 and stats["retries"] == 0
    assert stats["eta_seconds"] == 0.0 and stats["pages_per_second"] > 0
    (host,) = crawl.host_stats()
    assert host["host"] == server.url.split("//")[1] and host["bytes"] == served_bytes
    assert host["fetches"] == page_fetches

    env = {**processes.env}
    status = subprocess.run([*CLI, "status", "known", "--json"], capture_output=True, text=True, env=env,
                            timeout=60)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["known"]["bytes"] == served_bytes

    port = free_port()
    exporter = subprocess.Popen([*CLI, "metrics", "--port", str(port)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        body = None
        for _ in range(100):
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
                break
            except OSError:
                time.sleep(0.1)
        assert body is not None, \
            exporter.stderr.read1().decode() if exporter.poll() is not None else "no answer"
    finally:
        exporter.terminate()
        exporter.wait(timeout=10)
    samples = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    assert samples[("crawlcluster_rows", (("project", "known"), ("status", "done")))] == stats["done"]
    assert samples[("crawlcluster_pages_total", (("outcome", "done"), ("project", "known")))] == stats["done"]
    assert samples[("crawlcluster_downloaded_bytes_total", (("project", "known"),))] == served_bytes
    assert samples[("crawlcluster_fetch_latency_seconds_count", (("project", "known"),))] == page_fetches
    assert samples[("crawlcluster_queue_messages", (("queue", "fetch"),))] == 0
    assert samples[("crawlcluster_tasks_total", (("outcome", "success"), ("stage", "fetch")))] >= 1
    assert samples[("crawlcluster_tasks_total", (("outcome", "success"), ("stage", "store")))] >= 1


def test_grafana_dashboard_queries_only_metrics_the_exporter_serves():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    dashboard = json.loads((root / "deploy/grafana/crawlcluster-dashboard.json").read_text())
    exporter = (root / "crawlcluster/metrics.py").read_text()
    served = set(re.findall(r'"(crawlcluster_[a-z_]+)"', exporter))
    used = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            for name in re.findall(r"crawlcluster_[a-z_]+", target["expr"]):
                used.add(re.sub(r"_(total|bucket|count|sum)$", "", name))
    assert used and used <= served, used - served


def test_pages_leave_robots_rows_out_while_rows_count_them(sqlite_url):
    """One robots.txt row per host is the scheduler's own: stats()["pages"], `status` and
    the progress bar count pages only, stats()["robots"] has the robots rows, and the row
    counts (what is_idle goes by) still hold both."""
    from click.testing import CliRunner
    from sqlalchemy import insert

    from crawlcluster.cli import main
    from crawlcluster.client import Crawl
    from crawlcluster.db import get_engine
    from crawlcluster.progress import CrawlProgress
    from crawlcluster.schema import crawl_tasks, projects

    now = time.time()
    rows = [("http://a.test/robots.txt", "__robots__", "done"),
            ("http://b.test/robots.txt", "__robots__", "failed"),
            ("http://c.test/robots.txt", "__robots__", "pending"),
            ("http://a.test/", "parse", "done"), ("http://a.test/x", "parse", "done"),
            ("http://b.test/", "parse", "failed")]
    with get_engine(sqlite_url).begin() as conn:
        conn.execute(insert(projects).values(name="split", spider="crawlcluster.spider:LinkSpider",
                                             status="running", settings={}, tasks_created=len(rows),
                                             created_at=now, updated_at=now))
        conn.execute(insert(crawl_tasks), [
            {"task_id": f"{n:032x}", "project": "split", "url": url, "host": url.split("/")[2],
             "status": status, "callback": callback, "next_run_at": now, "created_at": now, "updated_at": now,
             "error": "robots.txt unreachable" if status == "failed" else None, "error_kind": None}
            for n, (url, callback, status) in enumerate(rows)])
    stats = Crawl("split", database_url=sqlite_url).stats()
    assert (stats["done"], stats["failed"], stats["pending"]) == (3, 2, 1)  # rows
    assert (stats["pages"]["done"], stats["pages"]["failed"], stats["pages"]["pending"]) == (2, 1, 0)
    assert (stats["robots"]["done"], stats["robots"]["failed"], stats["robots"]["pending"]) == (1, 1, 1)
    assert not Crawl("split", database_url=sqlite_url).is_idle(stats)  # a robots.txt fetch is still pending
    assert sum(Crawl("split", database_url=sqlite_url).failure_counts().values()) == stats["pages"]["failed"]
    bar = CrawlProgress("split", enabled=True)
    with bar:
        bar.update(stats)
        task = bar._progress.tasks[0]
        assert (task.completed, task.total) == (3, 3)  # pages done+failed out of pages known
    env = {"CRAWLCLUSTER_DATABASE_URL": sqlite_url, "COLUMNS": "80"}
    overview = CliRunner().invoke(main, ["status"], env=env)
    assert overview.exit_code == 0, overview.output
    line = next(text for text in overview.output.splitlines() if text.startswith("split"))
    assert line.split()[2:6] == ["0", "0", "2", "1"]  # pend queue done fail: pages
    detail = CliRunner().invoke(main, ["status", "split"], env=env)
    text = " ".join(detail.output.split())
    assert "2 done, 1 failed" in text and "robots.txt: 1 pending, 1 done, 1 failed" in text
