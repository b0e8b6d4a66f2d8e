"""One benchmark run of each crawler on the fast site, measured the same way.

Every runner resets the site's hit counts, crawls the whole site from "/", and returns a
:class:`RunResult`: pages (distinct pages the site served), items the crawler kept, wall
seconds, CPU seconds and peak RSS of the crawler's processes, duplicate fetches, and the
bytes Redis received. A runner never raises for a crawl that failed or timed out: the
result carries the error, so one broken crawler does not lose the others' figures.

Wall seconds: a one-process crawler (embedded crawlcluster, plain Scrapy) is timed from
process start to exit, as a user of the command sees it. A cluster (crawlcluster workers,
scrapy-redis spiders) is a service whose processes are up before the crawl, so it is timed
from the site's first request of the run to the end of the crawl (every row done, or the
last item made); the delay before the first fetch (a beat tick, a scrapy-redis idle poll
of up to 5 s) is left out for both.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from bench.fastsite import FastSiteProcess
from bench.procstats import ProcessSampler, service_matcher, wait_with_rusage

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRAPY_DIR = Path(__file__).resolve().parent / "scrapy_project"
FETCH_CONCURRENCY = 64  # in flight per process, for every crawler
# retries of a 5xx page (the small-page site has some): Scrapy's default count, and
# crawlcluster's quick policy count with its delays cut to 1 s so a crawl ends soon after them
RETRIES = 2
RETRY_DELAY_SECONDS = 1


# crawlcluster's per-host limit per fetch process; CRAWLCLUSTER_BENCH_PER_HOST changes it for
# experiments (the table's footnote says which value was used)
PER_HOST_PER_FETCH_PROCESS = int(os.environ.get("CRAWLCLUSTER_BENCH_PER_HOST", FETCH_CONCURRENCY))


def crawlcluster_env(fetch_processes: int) -> dict[str, str]:
    """crawlcluster's limits: 64 fetches in flight per fetch process, and a per-host limit
    (cluster-wide in crawlcluster) of 64 per fetch process, which is what N Scrapy
    processes with CONCURRENT_REQUESTS_PER_DOMAIN=64 allow against one host."""
    return {"CRAWLCLUSTER_FETCH_CONCURRENCY": str(FETCH_CONCURRENCY),
            "CRAWLCLUSTER_PER_HOST_CONCURRENCY": str(PER_HOST_PER_FETCH_PROCESS * fetch_processes),
            "CRAWLCLUSTER_PER_HOST_DELAY_SECONDS": "0",
            "CRAWLCLUSTER_RETRIES": str(RETRIES), "CRAWLCLUSTER_RETRY_DELAYS": str(RETRY_DELAY_SECONDS)}


SCRAPY_SETTINGS: dict[str, Any] = {
    "CONCURRENT_REQUESTS": FETCH_CONCURRENCY,
    "CONCURRENT_REQUESTS_PER_DOMAIN": FETCH_CONCURRENCY,
    "DOWNLOAD_DELAY": 0,
    "AUTOTHROTTLE_ENABLED": False,
    "HTTPCACHE_ENABLED": False,
    "ROBOTSTXT_OBEY": True,
    "RETRY_TIMES": RETRIES,
    "LOG_LEVEL": "INFO",
}
SCRAPY_REDIS_START_KEY = "benchsite-redis:start_urls"
# scrapy-redis measures idleness from the last time it saw a start URL (or from import),
# so this must outlast a spider's start-up; it only delays the exit, not the wall time
SCRAPY_REDIS_IDLE_SECONDS = 10


def scrapy_redis_settings(redis_url: str) -> dict[str, Any]:
    return {
        **SCRAPY_SETTINGS,
        "SCHEDULER": "scrapy_redis.scheduler.Scheduler",
        "DUPEFILTER_CLASS": "scrapy_redis.dupefilter.RFPDupeFilter",
        # the harness flushes the Redis db before each run; persisting keeps one spider
        # that closes first from deleting the queue under the other
        "SCHEDULER_PERSIST": True,
        "REDIS_URL": redis_url,
        "MAX_IDLE_TIME_BEFORE_CLOSE": SCRAPY_REDIS_IDLE_SECONDS,
    }


@dataclass
class RunResult:
    crawler: str
    pages: int = 0
    items: int = 0
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    service_cpu_seconds: float = 0.0
    peak_rss_bytes: int = 0
    processes: int = 0
    duplicates: int = 0
    requests: int = 0
    not_found: int = 0
    redis_bytes: int | None = None
    exit_after_last_seconds: float | None = None  # one-process crawlers: exit minus the site's last request
    error_requests: int = 0
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    cpu_by_process: dict[str, float] = field(default_factory=dict)  # cluster: CPU seconds per worker and beat

    @property
    def pages_per_second(self) -> float:
        return self.pages / self.wall_seconds if self.wall_seconds > 0 else 0.0


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def _apply_hits(result: RunResult, hits: dict[str, Any]) -> None:
    result.pages = hits["pages"]
    result.duplicates = hits["duplicates"]
    result.requests = hits["requests"]
    result.not_found = hits["not_found"]
    result.error_requests = hits.get("error_requests", 0)


def _exit_after_last(result: RunResult, hits: dict[str, Any], exited_at: float) -> None:
    """Seconds from the site's last request to the process's exit: what the end of a crawl costs."""
    if hits.get("last_at"):
        result.exit_after_last_seconds = max(0.0, exited_at - hits["last_at"])


def _redis_input_bytes(client: redis.Redis) -> int:
    return int(client.info("stats")["total_net_input_bytes"])


def _log_tail(path: Path, chars: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def _scrapy_args(spider_file: str, settings: dict[str, Any], *extra: str) -> list[str]:
    args = [sys.executable, "-m", "scrapy", "runspider", str(SCRAPY_DIR / spider_file), *extra]
    for name, value in settings.items():
        args += ["-s", f"{name}={value}"]
    return args


def run_embedded(site: FastSiteProcess, workdir: Path, run: int, timeout_seconds: float) -> RunResult:
    """``crawlcluster crawl URL --db FILE -q`` as its own process."""
    result = RunResult("embedded")
    site.reset()
    log_path = workdir / f"embedded-{run}.log"
    args = [sys.executable, "-m", "crawlcluster.cli", "crawl", site.url + "/", "-q",
            "--db", str(workdir / f"embedded-{run}.db"), "--project", f"embedded{run}"]
    with open(log_path, "wb") as log:
        started = time.monotonic()
        proc = subprocess.Popen(args, cwd=workdir, env=_env(**crawlcluster_env(1)),
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    sampler = ProcessSampler(lambda: [proc.pid]).start()
    exited = wait_with_rusage(proc.pid, started, timeout_seconds)
    exited_at = time.time()  # wall clock, as the site's timestamps
    proc.returncode = exited.returncode
    sample = sampler.stop()
    hits = site.hits()
    _apply_hits(result, hits)
    _exit_after_last(result, hits, exited_at)
    result.wall_seconds, result.cpu_seconds = exited.wall_seconds, exited.cpu_seconds
    result.peak_rss_bytes, result.processes = sample.peak_rss_bytes, sample.peak_processes
    output = _log_tail(log_path, 4000)
    match = re.search(r"(\d+) (?:pages )?done, (\d+) failed, (\d+) items", output)
    if match:
        result.items = int(match.group(3))
        if int(match.group(2)):
            result.notes.append(f"{match.group(2)} rows failed")
    if exited.returncode != 0:
        result.error = f"exit {exited.returncode}" + (" (timed out)" if exited.returncode == -9 else "")
        logger.warning("embedded run %d failed:\n%s", run, output)
    return result


def run_scrapy(site: FastSiteProcess, workdir: Path, run: int, timeout_seconds: float) -> RunResult:
    """Plain Scrapy, one process, items to a JSON lines feed."""
    result = RunResult("scrapy")
    site.reset()
    log_path, stats_path = workdir / f"scrapy-{run}.log", workdir / f"scrapy-{run}.json"
    args = _scrapy_args("site_spider.py", SCRAPY_SETTINGS, "-a", f"start_url={site.url}/",
                        "-a", f"stats_path={stats_path}", "-O",
                        f"{workdir / f'scrapy-{run}.jsonl'}:jsonlines")
    with open(log_path, "wb") as log:
        started = time.monotonic()
        proc = subprocess.Popen(args, cwd=workdir, env=_env(), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    sampler = ProcessSampler(lambda: [proc.pid]).start()
    exited = wait_with_rusage(proc.pid, started, timeout_seconds)
    exited_at = time.time()  # wall clock, as the site's timestamps
    proc.returncode = exited.returncode
    sample = sampler.stop()
    hits = site.hits()
    _apply_hits(result, hits)
    _exit_after_last(result, hits, exited_at)
    result.wall_seconds, result.cpu_seconds = exited.wall_seconds, exited.cpu_seconds
    result.peak_rss_bytes, result.processes = sample.peak_rss_bytes, sample.peak_processes
    try:
        result.items = json.loads(stats_path.read_text())["items"]
    except (OSError, ValueError, KeyError):
        result.error = "no stats file"
    if exited.returncode != 0:
        result.error = f"exit {exited.returncode}" + (" (timed out)" if exited.returncode == -9 else "")
        logger.warning("scrapy run %d failed:\n%s", run, _log_tail(log_path))
    return result


def run_scrapy_redis(site: FastSiteProcess, workdir: Path, run: int, processes: int, redis_url: str,
                     timeout_seconds: float) -> RunResult:
    """``processes`` scrapy-redis spiders sharing one Redis db, seeded once all have opened."""
    result = RunResult(f"scrapy-redis ×{processes}")
    client = redis.Redis.from_url(redis_url)
    client.flushdb()  # the benchmark owns this db: queue, dupefilter and start URLs start empty
    site.reset()
    settings = scrapy_redis_settings(redis_url)
    procs: list[subprocess.Popen] = []
    logs: list[Path] = []
    stats_paths: list[Path] = []
    started = time.monotonic()
    for i in range(processes):
        log_path = workdir / f"redis{processes}-{run}-{i}.log"
        stats_path = workdir / f"redis{processes}-{run}-{i}.json"
        args = _scrapy_args("redis_spider.py", settings, "-a", "host=127.0.0.1", "-a",
                            f"stats_path={stats_path}",
                            "-O", f"{workdir / f'redis{processes}-{run}-{i}.jsonl'}:jsonlines")
        with open(log_path, "wb") as log:
            procs.append(subprocess.Popen(args, cwd=workdir, env=_env(), stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True))
        logs.append(log_path)
        stats_paths.append(stats_path)
    sampler = ProcessSampler(lambda: [p.pid for p in procs], service_match=service_matcher(None)).start()
    deadline = started + 90
    while not all("Spider opened" in _log_tail(p, 10 ** 6) for p in logs) and time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            break
        time.sleep(0.1)
    before = _redis_input_bytes(client)
    client.lpush(SCRAPY_REDIS_START_KEY, json.dumps({"url": site.url + "/"}))
    exits = [wait_with_rusage(p.pid, started, timeout_seconds) for p in procs]
    for proc, exited in zip(procs, exits):
        proc.returncode = exited.returncode
    sample = sampler.stop()
    result.redis_bytes = _redis_input_bytes(client) - before
    hits = site.hits()
    _apply_hits(result, hits)
    result.cpu_seconds = sum(e.cpu_seconds for e in exits)
    result.service_cpu_seconds = sample.service_cpu_seconds
    result.peak_rss_bytes, result.processes = sample.peak_rss_bytes, sample.peak_processes
    last_item_at = 0.0
    per_process = []
    for stats_path in stats_paths:
        try:
            stats = json.loads(stats_path.read_text())
        except (OSError, ValueError):
            continue
        result.items += stats["items"]
        per_process.append(stats["items"])
        last_item_at = max(last_item_at, stats["last_item_at"])
    if len(per_process) > 1:
        result.notes.append("items per process " + "/".join(map(str, per_process)))
    end = last_item_at or hits["last_at"]
    result.wall_seconds = end - hits["first_at"] if hits["first_at"] else 0.0
    failed = [e.returncode for e in exits if e.returncode != 0]
    if failed or len(per_process) < processes:
        result.error = (f"exit codes {[e.returncode for e in exits]}"
                        + (" (timed out)" if -9 in failed else ""))
        logger.warning("scrapy-redis run %d failed:\n%s", run, _log_tail(logs[0]))
    return result


def clear_tables(database_url: str) -> None:
    """Empty the frontier between cluster runs, so every run starts on the same table sizes."""
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("SET LOCAL lock_timeout = '10s'"))
            for table in ("results", "crawl_tasks", "projects"):
                conn.execute(text(f"DELETE FROM {table}"))
    except Exception as exc:  # noqa: BLE001 - a leftover row set only costs the next run a little
        logger.warning("could not empty the bench tables: %s", exc)
    finally:
        engine.dispose()


def _row_counts(crawl: Any) -> dict[str, Any]:
    try:
        return crawl.stats(figures=False)  # row counts only: the figures cost queries per poll
    except TypeError:
        return crawl.stats()


def _wait_idle(crawl: Any, timeout_seconds: float, poll_seconds: float = 0.1) -> dict[str, Any]:
    """Like ``Crawl.wait``, polling row counts only, and returning them."""
    from crawlcluster.client import CrawlTimeout

    deadline = time.monotonic() + timeout_seconds
    while True:
        stats = _row_counts(crawl)
        if stats["pending"] == 0 and stats["queued"] == 0:
            return stats
        if time.monotonic() > deadline:
            raise CrawlTimeout(f"{crawl.project}: {stats['pending']} pending and "
                               f"{stats['queued']} queued rows "
                               f"after {timeout_seconds}s")
        time.sleep(poll_seconds)


def run_cluster(cluster: Any, label: str, site: FastSiteProcess, run: int, database_url: str, redis_url: str,
                timeout_seconds: float) -> RunResult:
    """Submit the site to a running LocalCluster and wait until no row is pending or queued."""
    from sqlalchemy.engine import make_url

    import crawlcluster
    from crawlcluster.client import CrawlTimeout

    result = RunResult(label)
    clear_tables(database_url)
    client = redis.Redis.from_url(redis_url)
    site.reset()
    sampler = ProcessSampler(lambda: [p.pid for p in cluster.procs.values()],
                             service_match=service_matcher(make_url(database_url).database)).start()
    before = _redis_input_bytes(client)
    crawl = crawlcluster.submit([site.url + "/"], project=f"bench{run}", database_url=database_url)
    try:
        stats = _wait_idle(crawl, timeout_seconds)
        ended = time.time()
    except CrawlTimeout as exc:
        stats, ended = _row_counts(crawl), time.time()
        result.error = "timed out"
        logger.warning("%s", exc)
        crawl.cancel()
    sample = sampler.stop()
    result.redis_bytes = _redis_input_bytes(client) - before
    hits = site.hits()
    _apply_hits(result, hits)
    result.items = stats.get("items", 0)
    if stats.get("failed"):
        result.notes.append(f"{stats['failed']} rows failed")
    result.wall_seconds = ended - hits["first_at"] if hits["first_at"] else 0.0
    result.cpu_seconds, result.service_cpu_seconds = sample.cpu_seconds, sample.service_cpu_seconds
    result.peak_rss_bytes, result.processes = sample.peak_rss_bytes, sample.peak_processes
    names = {proc.pid: name for name, proc in cluster.procs.items()}
    result.cpu_by_process = {names.get(root, str(root)): seconds
                             for root, seconds in sorted(sample.cpu_seconds_by_root.items())}
    dead = [name for name, proc in cluster.procs.items() if proc.poll() is not None]
    if dead:
        result.error = f"{', '.join(dead)} exited"
    return result
