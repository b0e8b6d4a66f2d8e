"""Pages/s on the 300-page demo site in embedded and in cluster mode, and message bytes per page.

    python -m bench site300 [--runs 3] [--pages 300]

Embedded: `crawlcluster crawl` as its own process. Cluster: one `-Q fetch`, one `-Q parse`,
one `-Q store` worker and beat on Redis and Postgres (CRAWLCLUSTER_BENCH_REDIS_URL, default
redis://127.0.0.1:6379/14; CRAWLCLUSTER_BENCH_DATABASE_URL, default
postgresql://postgres@127.0.0.1:5432/crawlcluster_bench, created when missing). Message
sizes are the msgpack payloads of every task message of one embedded crawl, and the bytes
Redis received per page in cluster mode (kombu's envelope, base64 bodies, events, acks).
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import redis
from rich.console import Console
from rich.table import Table

from bench.site import SiteProcess

REDIS_URL = os.environ.get("CRAWLCLUSTER_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
DATABASE_URL = os.environ.get("CRAWLCLUSTER_BENCH_DATABASE_URL",
                              "postgresql://postgres@127.0.0.1:5432/crawlcluster_bench")


def ensure_bench_database(url: str) -> str:
    """The bench database, created when missing, emptied and migrated (see bench.crawl)."""
    from bench.crawl import fresh_database

    return fresh_database(url)


def run_embedded(site_url: str, workdir: Path, run: int) -> dict[str, Any]:
    db_path = workdir / f"embedded-{run}.db"
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "crawlcluster.cli", "crawl", site_url + "/", "-q",
                           "--db", str(db_path), "--project", f"embedded{run}"],
                          capture_output=True, text=True, timeout=600)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    match = re.search(r"(\d+) done, (\d+) failed, \d+ items in ([\d.]+)s", proc.stderr)
    done, failed, crawl_seconds = int(match.group(1)), int(match.group(2)), float(match.group(3))
    return {"pages": done + failed, "crawl_seconds": crawl_seconds, "wall_seconds": wall}


def run_cluster(cluster: Any, site_url: str, run: int, database_url: str) -> dict[str, Any]:
    import crawlcluster

    client = redis.Redis.from_url(REDIS_URL)
    before = int(client.info("stats")["total_net_input_bytes"])
    started = time.monotonic()
    crawl = crawlcluster.submit([site_url + "/"], project=f"cluster{run}", database_url=database_url)
    stats = crawl.wait(timeout=600, poll_seconds=0.05)
    elapsed = time.monotonic() - started
    received = int(client.info("stats")["total_net_input_bytes"]) - before
    pages = stats["done"] + stats["failed"]
    return {"pages": pages, "crawl_seconds": elapsed, "redis_bytes_per_page": received / pages}


def measure_message_sizes(site_url: str, workdir: Path) -> dict[str, float]:
    """Crawl once in this process and add up the msgpack payload of every task message."""
    from celery.signals import before_task_publish
    from kombu.serialization import dumps

    from crawlcluster.embedded import run_embedded as crawl_embedded

    sizes: Counter[str] = Counter()
    counts: Counter[str] = Counter()

    def record(sender: str, body: Any, **_kw: Any) -> None:
        _ctype, _enc, payload = dumps(body, serializer="msgpack")
        sizes[sender] += len(payload)
        counts[sender] += 1

    before_task_publish.connect(record, weak=False)
    try:
        result = crawl_embedded([site_url + "/"], project="sizes", database_path=str(workdir / "sizes.db"),
                                progress=False)
    finally:
        before_task_publish.disconnect(record)
    pages = result.stats["done"] + result.stats["failed"]
    table = {f"{name.split('.')[-1]} bytes/page": sizes[name] / pages for name in sorted(sizes)}
    table.update({f"{name.split('.')[-1]} messages": counts[name] for name in sorted(counts)})
    table["total bytes/page"] = sum(sizes.values()) / pages
    return table


def _median_spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.median(values):.1f} ({min(values):.1f}–{max(values):.1f})"


def main(runs: int = 3, pages: int = 300) -> None:
    from crawlcluster.devtools.local_cluster import LocalCluster

    console = Console()
    site = SiteProcess(pages)
    database_url = ensure_bench_database(DATABASE_URL)
    redis.Redis.from_url(REDIS_URL).flushdb()  # the benchmark owns this database
    embedded: list[dict[str, Any]] = []
    cluster_runs: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="crawlcluster-bench-") as tmp:
            workdir = Path(tmp)
            env = {"CRAWLCLUSTER_DATABASE_URL": database_url, "CRAWLCLUSTER_BROKER_URL": REDIS_URL}
            with LocalCluster(env) as cluster:
                cluster.worker("fetch", "fetch")
                cluster.worker("parse", "parse")
                cluster.worker("store", "store")
                cluster.beat()
                for run in range(runs):  # alternate the two modes so drift hits both
                    embedded.append(run_embedded(site.url, workdir, run))
                    cluster_runs.append(run_cluster(cluster, site.url, run, database_url))
            sizes = measure_message_sizes(site.url, workdir)
    finally:
        site.stop()

    table = Table(title=f"{pages}-page demo site, {runs} runs each (median, min–max)")
    for column in ("mode", "pages", "crawl seconds", "pages/s", "process wall seconds"):
        table.add_column(column, justify="right")
    table.add_row("embedded (crawlcluster crawl)", str(embedded[0]["pages"]),
                  _median_spread([r["crawl_seconds"] for r in embedded]),
                  _median_spread([r["pages"] / r["crawl_seconds"] for r in embedded]),
                  _median_spread([r["wall_seconds"] for r in embedded]))
    table.add_row("cluster (1 fetch + 1 parse + 1 store + beat)", str(cluster_runs[0]["pages"]),
                  _median_spread([r["crawl_seconds"] for r in cluster_runs]),
                  _median_spread([r["pages"] / r["crawl_seconds"] for r in cluster_runs]), "-")
    console.print(table)
    size_table = Table(title="message payload per page (msgpack, one embedded crawl)")
    size_table.add_column("figure")
    size_table.add_column("value", justify="right")
    for name, value in sizes.items():
        size_table.add_row(name, f"{value:,.0f}")
    size_table.add_row("Redis bytes received per page (cluster, median)",
                       f"{statistics.median(r['redis_bytes_per_page'] for r in cluster_runs):,.0f}")
    console.print(size_table)
