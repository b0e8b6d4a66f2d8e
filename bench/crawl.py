"""crawlcluster beside plain Scrapy and scrapy-redis on one fast local site: one table.

    python -m bench crawl [--site bench|small|both] [--pages 5000] [--small-pages 2000] [--runs 3]
                          [--only scrapy,embedded,...] [--write-results]

Runs on the bench site (bench/fastsite.py, 10–50 KB pages), the small-page site
(bench/smallsite.py, ~2 KB pages with 5xx pages and redirects) or both, one table with a
row per site and crawler. Per site, one after another in one session: plain Scrapy;
crawlcluster embedded (`crawlcluster crawl URL --db FILE -q`); crawlcluster cluster mode
with 1 fetch + 1 parse + 1 store worker and beat, then 2 of each and beat, on real Redis
(CRAWLCLUSTER_BENCH_CRAWL_REDIS_URL, default redis://127.0.0.1:6379/12, flushed) and
Postgres (CRAWLCLUSTER_BENCH_CRAWL_DATABASE_URL, default
postgresql://postgres@127.0.0.1:5432/crawlcluster_bench_crawl, created, emptied); then
scrapy-redis with 1 and 2 spider processes (CRAWLCLUSTER_BENCH_SCRAPY_REDIS_URL, default
redis://127.0.0.1:6379/13, flushed before each run). Every crawler keeps 64 requests in
flight per process with no delay. Each is run ``--runs`` times; the table shows the
median and the min–max spread.
"""

from __future__ import annotations

import logging
import os
import statistics
import tempfile
from pathlib import Path
from typing import Callable

import redis
from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, text

from bench import report
from bench.crawlers import (
    FETCH_CONCURRENCY,
    PER_HOST_PER_FETCH_PROCESS,
    RETRIES,
    RETRY_DELAY_SECONDS,
    SCRAPY_SETTINGS,
    RunResult,
    crawlcluster_env,
    run_cluster,
    run_embedded,
    run_scrapy,
    run_scrapy_redis,
    scrapy_redis_settings,
)
from bench.fastsite import FastSiteProcess

logger = logging.getLogger(__name__)

REDIS_URL = os.environ.get("CRAWLCLUSTER_BENCH_CRAWL_REDIS_URL", "redis://127.0.0.1:6379/12")
SCRAPY_REDIS_URL = os.environ.get("CRAWLCLUSTER_BENCH_SCRAPY_REDIS_URL", "redis://127.0.0.1:6379/13")
DATABASE_URL = os.environ.get("CRAWLCLUSTER_BENCH_CRAWL_DATABASE_URL",
                              "postgresql://postgres@127.0.0.1:5432/crawlcluster_bench_crawl")
CRAWLERS = ("scrapy", "embedded", "cluster1", "cluster2", "redis1", "redis2")
LABELS = {
    "scrapy": "Scrapy",
    "embedded": "crawlcluster embedded",
    "cluster1": "crawlcluster cluster 1+1+1 +beat",
    "cluster2": "crawlcluster cluster 2+2+2 +beat",
    "redis1": "scrapy-redis ×1",
    "redis2": "scrapy-redis ×2",
}
SITES = ("small", "bench")
SITE_LABELS = {"small": "small 2 KB", "bench": "bench 10–50 KB"}
COLUMNS = ["site", "crawler", "procs", "pages", "wall s", "pages/s", "× Scrapy", "peak RSS MiB",
           "CPU s / 1k pages", "Redis+PG CPU s / 1k pages", "all CPU s / 1k pages", "dup. fetches",
           "Redis bytes / page", "exit after last page, s"]


def fresh_database(url: str) -> str:
    """Create the bench database when missing, drop everything in it, create the schema."""
    from crawlcluster.db import normalize_database_url

    url = normalize_database_url(url)
    server_url, _, name = url.rpartition("/")
    admin = create_engine(server_url + "/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if not conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first():
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    from crawlcluster.db import dispose_all, get_engine

    dispose_all()  # forget that this process saw the schema before it was dropped
    get_engine(url)  # migrate now, not inside the first timed run
    return url


def _service_versions(database_url: str) -> tuple[str, str]:
    try:
        redis_version = redis.Redis.from_url(REDIS_URL).info("server")["redis_version"]
        engine = create_engine(database_url)
        with engine.connect() as conn:
            pg_version = conn.execute(text("SHOW server_version")).scalar_one().split()[0]
        engine.dispose()
        return redis_version, pg_version
    except Exception:  # noqa: BLE001 - versions only decorate the report
        return "", ""


def _run_cluster_set(key: str, workers_per_stage: int, site: FastSiteProcess, database_url: str, runs: int,
                     timeout_seconds: float, console: Console) -> list[RunResult]:
    from crawlcluster.devtools.local_cluster import LocalCluster

    redis.Redis.from_url(REDIS_URL).flushdb()  # the benchmark owns this db
    fresh_database(database_url)
    env = {"CRAWLCLUSTER_DATABASE_URL": database_url, "CRAWLCLUSTER_BROKER_URL": REDIS_URL,
           **crawlcluster_env(workers_per_stage)}
    results = []
    with LocalCluster(env) as cluster:
        for i in range(1, workers_per_stage + 1):
            for stage in ("fetch", "parse", "store"):
                cluster.worker(f"{stage}{i}", stage)  # distinct -n names: fetch1@host, fetch2@host
        cluster.beat()
        for run in range(runs):
            result = run_cluster(cluster, LABELS[key], site, run, database_url, REDIS_URL, timeout_seconds)
            _say(console, result, run)
            results.append(result)
        if any(r.error for r in results):
            for name in cluster.procs:
                logger.warning("%s log tail:\n%s", name, cluster.log(name)[-2000:])
    return results


def _say(console: Console, result: RunResult, run: int) -> None:
    console.log(f"{result.crawler} run {run + 1}: {result.pages} pages, {result.items} items in "
                f"{result.wall_seconds:.1f}s ({result.pages_per_second:.0f} pages/s), "
                f"{result.duplicates} duplicate fetches" + (f", ERROR {result.error}" if result.error else "")
                + (f" [{'; '.join(result.notes)}]" if result.notes else ""))
    if result.cpu_by_process:
        # which stage is busy: a worker near wall seconds of CPU is saturated (one core each, GIL)
        spent = ", ".join(f"{name} {seconds:.1f}" for name, seconds in result.cpu_by_process.items())
        console.log(f"    CPU seconds by process tree: {spent}; Redis+PG {result.service_cpu_seconds:.1f}")


def run_all(pages: int, runs: int, only: list[str], timeout_seconds: float,
            console: Console, small: bool = False) -> dict[str, list[RunResult]]:
    results: dict[str, list[RunResult]] = {}
    site = FastSiteProcess(pages, small=small)
    console.log(f"{'small-page' if small else 'benchmark'} site with {pages} pages at {site.url}")
    try:
        with tempfile.TemporaryDirectory(prefix="crawlcluster-bench-crawl-") as tmp:
            workdir = Path(tmp)
            database_url = None
            one_process: dict[str, Callable[[int], RunResult]] = {
                "scrapy": lambda run: run_scrapy(site, workdir, run, timeout_seconds),
                "embedded": lambda run: run_embedded(site, workdir, run, timeout_seconds),
                "redis1": lambda run: run_scrapy_redis(site, workdir, run, 1, SCRAPY_REDIS_URL,
                                                       timeout_seconds),
                "redis2": lambda run: run_scrapy_redis(site, workdir, run, 2, SCRAPY_REDIS_URL,
                                                       timeout_seconds),
            }
            # the one-process crawlers take turns (Scrapy run 1, embedded run 1, Scrapy run 2, ...),
            # so a machine whose load changes during the session weighs on each alike
            alone = [key for key in CRAWLERS if key in only and key in one_process]
            for run in range(runs):
                for key in alone:
                    result = one_process[key](run)
                    result.crawler = LABELS[key]
                    _say(console, result, run)
                    results.setdefault(key, []).append(result)
            for key in CRAWLERS:
                if key not in only or key in one_process:
                    continue
                database_url = database_url or fresh_database(DATABASE_URL)
                results[key] = _run_cluster_set(key, 1 if key == "cluster1" else 2, site, database_url,
                                                runs, timeout_seconds, console)
    finally:
        site.stop()
    return results


def table_rows(results: dict[str, list[RunResult]], site: str = "bench") -> list[list[str]]:
    def ok(rs: list[RunResult]) -> list[RunResult]:
        return [r for r in rs if not r.error and r.pages] or rs

    scrapy_rate = (statistics.median(r.pages_per_second for r in ok(results["scrapy"]))
                   if results.get("scrapy") else 0)
    rows = []
    for key in CRAWLERS:
        if key not in results:
            continue
        rs = ok(results[key])
        good = [r for r in rs if r.pages]
        pages = sorted({r.pages for r in rs})
        errors = sorted({r.error for r in results[key] if r.error})
        failed = len([r for r in results[key] if r.error])
        label = LABELS[key] + (f" — {failed} failed: {'; '.join(errors)}" if errors else "")
        rates = [r.pages_per_second for r in good]
        redis_per_page = [r.redis_bytes / r.pages for r in good if r.redis_bytes is not None]
        exits = [r.exit_after_last_seconds for r in rs if r.exit_after_last_seconds is not None]
        rows.append([
            SITE_LABELS[site],
            label,
            "/".join(str(n) for n in sorted({r.processes for r in rs})),
            "/".join(f"{p:,}" for p in pages),
            report.median_spread([r.wall_seconds for r in rs]),
            report.median_spread(rates, 0),
            f"{statistics.median(rates) / scrapy_rate:.2f}" if rates and scrapy_rate else "-",
            report.median_spread([r.peak_rss_bytes / 2 ** 20 for r in rs], 0),
            report.median_spread([1000 * r.cpu_seconds / r.pages for r in good], 1),
            report.median_spread([1000 * r.service_cpu_seconds / r.pages for r in good], 1)
            if key.startswith(("cluster", "redis")) else "-",
            report.median_spread([1000 * (r.cpu_seconds + r.service_cpu_seconds) / r.pages for r in good], 1),
            report.median_spread([float(r.duplicates) for r in rs], 0),
            report.median_spread(redis_per_page, 0) if redis_per_page else "-",
            report.median_spread(exits, 2) if exits else "-",
        ])
    return rows


def cpu_breakdown_rows(results: dict[str, list[RunResult]], site: str = "bench") -> list[list[str]]:
    """Cluster runs: CPU seconds per worker (its pool children included) and beat, median
    over runs, beside the wall seconds; a process near the wall figure is saturated."""
    rows = []
    for key in ("cluster1", "cluster2"):
        runs = [r for r in results.get(key, []) if r.cpu_by_process]
        if not runs:
            continue
        names = list(runs[0].cpu_by_process)
        cells = [f"{name} {statistics.median(r.cpu_by_process.get(name, 0.0) for r in runs):.1f}"
                 for name in names]
        rows.append([SITE_LABELS[site], LABELS[key], report.median_spread([r.wall_seconds for r in runs]),
                     ", ".join(cells),
                     report.median_spread([r.service_cpu_seconds for r in runs])])
    return rows


BREAKDOWN_COLUMNS = ["site", "cluster", "wall s", "CPU s per process tree (median)", "Redis+PG CPU s"]


def footnotes(site_pages: dict[str, int], runs: int) -> list[str]:
    scrapy_flags = " ".join(f"-s {k}={v}" for k, v in SCRAPY_SETTINGS.items())
    redis_only = {k: v for k, v in scrapy_redis_settings(SCRAPY_REDIS_URL).items()
                  if k not in SCRAPY_SETTINGS}
    sites = []
    if "small" in site_pages:
        sites.append(f"small: the {site_pages['small']:,}-page small-page site (bench/smallsite.py: "
                     "1.6–2.1 KB pages, ~20 same-host links each, 1% answering 500 every time, "
                     "1% redirected with a 301 to a page linked from nowhere, robots.txt allows all)")
    if "bench" in site_pages:
        sites.append(f"bench: the {site_pages['bench']:,}-page site (bench/fastsite.py: 10–50 KB pages, "
                     "20 same-host links each, robots.txt allows all)")
    return [
        "; ".join(sites) + f". {runs} runs per crawler and site, median (min–max).",
        "pages: distinct pages the site served during the run. wall s: one-process crawlers from process "
        "start to exit; clusters (workers or spiders already running) from the site's first request of the "
        "run to the end of the crawl (every row done / last item made). pages/s = pages / wall s; "
        "× Scrapy compares medians.",
        f"Same limits everywhere: {FETCH_CONCURRENCY} requests in flight per process (per fetch process for "
        "crawlcluster), no delay, robots.txt obeyed (one robots.txt request per crawl, or per process for "
        "scrapy-redis; not counted as a page). crawlcluster: "
        f"CRAWLCLUSTER_FETCH_CONCURRENCY={FETCH_CONCURRENCY}, "
        f"CRAWLCLUSTER_PER_HOST_CONCURRENCY={PER_HOST_PER_FETCH_PROCESS} × fetch processes "
        "(crawlcluster's per-host limit is cluster-wide; N Scrapy processes allow N × 64 against one host), "
        f"CRAWLCLUSTER_PER_HOST_DELAY_SECONDS=0, CRAWLCLUSTER_RETRIES={RETRIES}, "
        f"CRAWLCLUSTER_RETRY_DELAYS={RETRY_DELAY_SECONDS} (Scrapy retries a 5xx {RETRIES} times at once), "
        "auto-pause at its default (the small site's always-500 pages, retried last, no longer pause "
        "a crawl: a run of failures pauses only while untried pages are left), "
        "obey_robots at its default (true), other settings at their defaults; worker pools are the "
        "per-queue defaults (fetch: threads; parse: prefork, one child per CPU; store: threads). "
        "procs: processes in the crawler's tree at the peak.",
        f"Scrapy settings: {scrapy_flags}, items to a JSON lines feed (-O items.jsonl:jsonlines); "
        "spider bench/scrapy_project/site_spider.py (LinkExtractor on the site's host, one item per page: "
        "url, title, status, link count).",
        "scrapy-redis: the same spider work (bench/scrapy_project/redis_spider.py, a RedisSpider seeded "
        "with the start URL once every process has opened) and the same settings plus "
        + ", ".join(f"{k}={v}" for k, v in redis_only.items()) + "; Redis db flushed before each run.",
        "peak RSS: the largest sum of VmRSS over the crawler's process tree, polled every 0.2 s "
        "(cluster: every worker and its pool children, and beat; Redis and Postgres are not included). "
        "CPU s / 1k pages: utime+stime of the same processes (wait4 rusage for processes that exit, "
        "/proc/PID/stat deltas for running workers). Redis+PG CPU: redis-server plus the Postgres backends "
        "connected to the bench database, during the run; redis-server is shared with whatever else runs "
        "on the machine. all CPU: the crawler's plus Redis+PG's.",
        "dup. fetches: requests for a page beyond its first, from the site's hit counts (a 5xx page asked "
        "again is a retry, not counted). Scrapy sends its "
        "start request with dont_filter, so \"/\" is fetched again when a page links to it (1 duplicate).",
        "Redis bytes / page: Redis INFO total_net_input_bytes over the run, divided by pages (all clients of "
        "that Redis server, so other users of the machine add noise).",
        "exit after last page: one-process crawlers, from the site's last request of the run to the "
        "process's exit (reaped by a 20 ms wait4 poll).",
    ]


def main(pages: int = 5000, runs: int = 3, only: str | None = None, timeout_seconds: float | None = None,
         write_results: bool = False, site: str = "bench", small_pages: int = 2000) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    console = Console(width=max(Console().width, 200))  # the table is wide; never wrap it in a log file
    chosen = [c.strip() for c in only.split(",")] if only else list(CRAWLERS)
    unknown = [c for c in chosen if c not in CRAWLERS]
    if unknown:
        raise SystemExit(f"unknown crawler {', '.join(unknown)}; choose from {', '.join(CRAWLERS)}")
    if site not in (*SITES, "both"):
        raise SystemExit(f"unknown site {site!r}; choose small, bench or both")
    site_pages = {name: small_pages if name == "small" else pages for name in SITES if site in (name, "both")}
    console.log(f"Scrapy settings: {SCRAPY_SETTINGS}")
    console.log(f"scrapy-redis settings: {scrapy_redis_settings(SCRAPY_REDIS_URL)}")
    console.log(f"crawlcluster: {crawlcluster_env(1)}")
    rows: list[list[str]] = []
    breakdown: list[list[str]] = []
    for name, count in site_pages.items():
        results = run_all(count, runs, chosen, timeout_seconds or max(120.0, count * 0.25), console,
                          small=name == "small")
        rows += table_rows(results, name)
        breakdown += cpu_breakdown_rows(results, name)
    described = ", ".join(f"{n} site {c:,} pages" for n, c in site_pages.items())
    table = Table(title=f"crawl benchmark: {described}, {runs} run(s) each, median (min–max)")
    for i, column in enumerate(COLUMNS):
        table.add_column(column, justify="left" if i < 2 else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    notes = footnotes(site_pages, runs)
    for i, note in enumerate(notes, 1):
        console.print(f"[dim]{i}. {note}[/]")
    if breakdown:
        cpu_table = Table(title="crawlcluster cluster mode: where the CPU went")
        for column in BREAKDOWN_COLUMNS:
            cpu_table.add_column(column)
        for row in breakdown:
            cpu_table.add_row(*row)
        console.print(cpu_table)
    console.log(f"load average at the end: {' / '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if write_results:
        from crawlcluster.db import normalize_database_url

        redis_version, pg_version = _service_versions(normalize_database_url(DATABASE_URL))
        body = "\n".join([
            "## Crawl throughput: crawlcluster, Scrapy, scrapy-redis",
            "",
            f"Measured {report.now_utc()} with `{report.command_line()}`.",
            "",
            report.machine_description(redis_version, pg_version),
            "",
            report.markdown_table(COLUMNS, rows),
            "",
            *[f"{i}. {note}" for i, note in enumerate(notes, 1)],
            *(["", "Where crawlcluster's cluster-mode CPU went (a process tree near the wall seconds is "
               "saturated: each worker process runs Python on one core at a time):", "",
               report.markdown_table(BREAKDOWN_COLUMNS, breakdown)] if breakdown else []),
        ])
        report.write_section("crawl", body)
        console.log(f"table written to {report.RESULTS_PATH}")
