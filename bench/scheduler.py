"""The scheduler alone at 10^5, 10^6 (and 10^7) pending rows: dispatch rate, tick time, RSS, plan.

    python -m bench scheduler [--sizes 100000,1000000] [--huge] [--seconds 20] [--keep]

Runs in its own database (CRAWLCLUSTER_BENCH_SCHED_DATABASE_URL, default
crawlcluster_bench_sched, dropped at the end) and under its own Redis key prefix (only its
keys are deleted, never the whole Redis database). Fills crawl_tasks of one project with N
due rows over 1,000 hosts (generated inside Postgres by generate_series; at 10^6 rows and
more the indexes are dropped for the insert and built again after it, as a restore does,
which is minutes faster than growing them row by row), vacuumed and analysed, then runs
Dispatcher.tick() against real Redis for a fixed time: rounds of ten ticks back to back
(while a tick reads and chooses rows, the committing thread marks the previous claims queued
and commits them and the publishing thread sends them; a tick waits when two claims are
still uncommitted, so the tick time is the pipeline's period), timed until the last row of
the round is committed and its message is on the broker. Between rounds, untimed, the rows
sent are marked done and the broker emptied, as workers would, so the queued set stays the
size a running cluster keeps (up to 20,000 rows). A round that finds nothing left to send
(10^5 rows last about five seconds) is not counted. robots.txt and per-host limits are off:
this measures claiming and publishing, not politeness. Prints one row per size (with the
table's heap and index sizes and the time of a VACUUM after the run) and the claim query's
plan at the largest size, taken after the run and before that vacuum. BENCH_CLAIM_BATCH and
BENCH_FETCH_BATCH change the claim size (2000) and URLs per message (16; a large claim goes
out in messages of up to CRAWLCLUSTER_FETCH_BATCH_MAX). BENCH_CLAIMS_IN_HAND changes how many
claims the committing thread may hold uncommitted while the tick reads the next
(crawlcluster.dispatch.pipeline.MAX_CLAIMS_IN_HAND, 2).

With ``--keep`` the database is left in place at the end, and a run that finds it holding
exactly the size's rows reuses them instead of filling again (10^7 rows take about five
minutes to fill): the rows earlier runs dispatched stay done (100,000-300,000 a run, a few
percent of 10^7) and the run claims the next ones, as untouched as after a fill.
Side-by-side runs then measure the same table, one size per run.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import replace
from typing import Any

import redis
from celery import Celery
from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, text, update

from bench.site300 import REDIS_URL, ensure_bench_database
from crawlcluster import settings
from crawlcluster.db import dispose_all, get_engine, normalize_database_url
from crawlcluster.dispatch import pipeline
from crawlcluster.dispatch.dispatcher import Dispatcher
from crawlcluster.schema import DONE, crawl_tasks, scheduler_lease

HOSTS = 1000
DATABASE_URL = os.environ.get("CRAWLCLUSTER_BENCH_SCHED_DATABASE_URL",
                              "postgresql://postgres@127.0.0.1:5432/crawlcluster_bench_sched")
# every key this bench writes to Redis starts with this (kombu's global_keyprefix)
KEY_PREFIX = f"crawlcluster-schedbench-{os.getpid()}:"
# rows from which the fill drops the indexes and builds them again after the insert
REBUILD_INDEXES_FROM = 1_000_000
CLAIM_BATCH = int(os.environ.get("BENCH_CLAIM_BATCH", 2000))
FETCH_BATCH = int(os.environ.get("BENCH_FETCH_BATCH", 16))
# a kept table is filled again once fewer of its rows than this are left pending
REUSE_PENDING_SHARE = 0.9
CLAIMS_IN_HAND = int(os.environ.get("BENCH_CLAIMS_IN_HAND", pipeline.MAX_CLAIMS_IN_HAND))
# ticks run back to back before the simulated workers finish what was sent
TICKS_BETWEEN_WORKERS = 10


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def machine_cpu() -> tuple[int, int]:
    """(busy, total) jiffies of every CPU of this machine, from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def fill(engine: Any, rows: int, part: int = 0, parts: int = 1) -> tuple[float, float]:
    """N pending rows of project 'bench' over HOSTS hosts, made by Postgres itself; with
    ``parts``, only the rows of the hosts of ``part`` (host number modulo ``parts``), as a
    frontier split by host over several databases holds. (Fill, vacuum) seconds."""
    started = time.monotonic()
    now = time.time()
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE crawl_tasks, projects, results"))
        indexes: list[str] = []
        if rows >= REBUILD_INDEXES_FROM:
            indexes = [d for (d,) in conn.execute(text(
                "SELECT indexdef FROM pg_indexes WHERE tablename = 'crawl_tasks' "
                "AND indexname NOT LIKE '%pkey'"))]
            for (name,) in conn.execute(text(
                    "SELECT indexname FROM pg_indexes WHERE tablename = 'crawl_tasks' "
                    "AND indexname NOT LIKE '%pkey'")).all():
                conn.execute(text(f'DROP INDEX "{name}"'))
            conn.execute(text("ALTER TABLE crawl_tasks DROP CONSTRAINT crawl_tasks_pkey"))
            indexes.insert(0, "ALTER TABLE crawl_tasks ADD PRIMARY KEY (task_id)")
            conn.execute(text("SET LOCAL maintenance_work_mem = '512MB'"))
        conn.execute(text(
            "INSERT INTO projects (name, spider, status, settings, tasks_created, created_at, updated_at) "
            "VALUES ('bench', 'crawlcluster.spider:LinkSpider', 'running', :settings, 0, :now, :now)"),
            {"settings": '{"obey_robots": false, "per_host_concurrency": 1000000000}', "now": now})
        conn.execute(text(f"""
            INSERT INTO crawl_tasks (task_id, project, url, host, status, priority, depth, callback,
                                     retries_left, next_run_at, dispatch_count, created_at, updated_at,
                                     auto_recrawl)
            SELECT md5(i::text), 'bench', 'http://host' || (i % {HOSTS}) || '.test/page/' || i,
                   'host' || (i % {HOSTS}) || '.test', 'pending', (i % 3), 1, 'parse',
                   3, :now - (i % 1000), 0, :now, :now, false
            FROM generate_series(1, :rows) AS i WHERE (i % {HOSTS}) % :parts = :part"""),
            {"rows": rows, "now": now, "parts": parts, "part": part})
        for definition in indexes:
            conn.execute(text(definition))
    # as autovacuum leaves a table that has been around: without this, the vacuum that a
    # bulk insert triggers (autovacuum_vacuum_insert_threshold) runs during the timed ticks
    vacuum_started = time.monotonic()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM (ANALYZE) crawl_tasks"))
    return time.monotonic() - started, time.monotonic() - vacuum_started


def reuse(engine: Any, rows: int) -> tuple[float, float] | None:
    """With ``--keep``: when the kept table holds exactly ``rows`` rows of the bench project,
    at least REUSE_PENDING_SHARE of them pending, use it as it is: the rows earlier runs
    dispatched stay done and this run claims the next ones, untouched since the fill
    (making the dispatched rows pending again would measure rows the last run brought into
    memory and rewrote close together). None when the table must be filled; else (0,
    vacuum seconds)."""
    with engine.connect() as conn:
        held, pending = conn.execute(text(
            "SELECT count(*), count(*) FILTER (WHERE status = 'pending') FROM crawl_tasks "
            "WHERE project = 'bench'")).one()
    if held != rows or pending < REUSE_PENDING_SHARE * rows:
        return None
    with engine.begin() as conn:  # the last run's lease, which it held until it exited
        conn.execute(scheduler_lease.delete())
    vacuum_started = time.monotonic()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM (ANALYZE) crawl_tasks"))
    return 0.0, time.monotonic() - vacuum_started


def kept_database(url: str) -> str | None:
    """The kept bench database's URL when it exists (migrated to this checkout's head on
    first use), else None."""
    url = normalize_database_url(url)
    server_url, _, name = url.rpartition("/")
    admin = create_engine(server_url + "/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        found = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first()
    admin.dispose()
    return url if found else None


def table_sizes(engine: Any) -> tuple[float, float]:
    """(heap, all indexes) of crawl_tasks in MiB."""
    with engine.connect() as conn:
        heap, indexes = conn.execute(text(
            "SELECT pg_table_size('crawl_tasks'), pg_indexes_size('crawl_tasks')")).one()
    return heap / 2**20, indexes / 2**20


def claim_plan(engine: Any) -> list[str]:
    stmt = (crawl_tasks.select().with_only_columns(crawl_tasks.c.task_id, crawl_tasks.c.host)
            .where(crawl_tasks.c.project == "bench", crawl_tasks.c.status == "pending",
                   crawl_tasks.c.next_run_at <= time.time())
            .order_by(crawl_tasks.c.priority.desc(), crawl_tasks.c.next_run_at).limit(4000)
            .with_for_update(skip_locked=True))
    compiled = stmt.compile(engine, compile_kwargs={"literal_binds": True})
    with engine.connect() as conn:
        return [row[0] for row in conn.execute(text(f"EXPLAIN ANALYZE {compiled}"))]


def empty_broker() -> None:
    """Delete this bench's keys (its queues, kombu's bindings and unacked hashes) and no other."""
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=KEY_PREFIX + "*", count=1000))
    for start in range(0, len(keys), 1000):
        client.delete(*keys[start:start + 1000])


def drop_database(url: str) -> None:
    """Drop the bench's own database (10^7 rows are a few GB)."""
    from crawlcluster.db import normalize_database_url

    server_url, _, name = normalize_database_url(url).rpartition("/")
    dispose_all()
    admin = create_engine(server_url + "/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def run_size(app: Celery, engine: Any, database_url: str, rows: int, seconds: float,
             keep: bool = False) -> dict[str, Any]:
    reused = reuse(engine, rows) if keep else None
    fill_seconds, vacuum_seconds = reused if reused is not None else fill(engine, rows)
    heap_mib, index_mib = table_sizes(engine)
    return {"rows": rows, "fill_seconds": fill_seconds, "vacuum_seconds": vacuum_seconds,
            "heap_mib": heap_mib, "index_mib": index_mib, **dispatch(app, engine, database_url, seconds)}


def dispatch(app: Celery, engine: Any, database_url: str, seconds: float) -> dict[str, Any]:
    """Rounds of ticks for ``seconds`` on a filled frontier (see the module docstring)."""
    empty_broker()
    # no robots.txt round and no per-host cap: the claim and publish path alone
    own = replace(settings.current(), claim_batch_size=CLAIM_BATCH, max_queued_per_project=10**9,
                  queued_deadline_seconds=3600, fetch_batch_size=FETCH_BATCH, tick_seconds=0.01,
                  obey_robots=False, per_host_concurrency=10**9)
    dispatcher = Dispatcher.from_settings(app, own, database_url=database_url)
    tick_times: list[float] = []
    dispatched = 0
    timed = 0.0
    own_cpu = 0.0
    busy_jiffies = total_jiffies = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        # timed: back-to-back ticks, as beat runs them on a busy frontier (each tick's
        # messages go out while the next one claims), then until the last message is sent
        started = time.perf_counter()
        cpu_started = time.process_time()
        busy_before, total_before = machine_cpu()
        before = dispatcher.published_total
        round_ticks = []
        for _ in range(TICKS_BETWEEN_WORKERS):
            tick_started = time.perf_counter()
            dispatcher.tick()
            round_ticks.append(time.perf_counter() - tick_started)
        dispatcher.flush()
        sent = dispatcher.published_total - before
        if sent == 0:
            break  # every row was sent: ticks that find nothing due are not dispatching
        timed += time.perf_counter() - started
        own_cpu += time.process_time() - cpu_started
        busy_after, total_after = machine_cpu()
        busy_jiffies += busy_after - busy_before
        total_jiffies += total_after - total_before
        tick_times.extend(round_ticks)
        dispatched += sent
        # untimed: the workers' part. The rows sent are marked done, so the queued set stays
        # the size a running cluster keeps, and the broker's lists are emptied.
        with engine.begin() as conn:
            conn.execute(update(crawl_tasks).where(crawl_tasks.c.project == "bench",
                                                   crawl_tasks.c.status == "queued")
                         .values(status=DONE))
        empty_broker()
    dispatcher.close()
    # what autovacuum then does: every row dispatched left a dead version and dead entries in
    # every index, and a vacuum reads each index whole
    plan = claim_plan(engine)  # before the vacuum: the claim walks the dead index entries
    vacuum_started = time.monotonic()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM crawl_tasks"))
    vacuum_after = time.monotonic() - vacuum_started
    return {"dispatched": dispatched, "timed_seconds": timed, "vacuum_after_seconds": vacuum_after,
            "plan": plan,
            "urls_per_second": dispatched / timed if timed else 0.0,
            "tick_median_ms": statistics.median(tick_times) * 1000,
            "tick_p90_ms": sorted(tick_times)[int(len(tick_times) * 0.9)] * 1000,
            "rss_mib": rss_bytes() / 2**20, "ticks": len(tick_times),
            "cpu_ms_per_1000": own_cpu / dispatched * 1e6 if dispatched else 0.0,
            "machine_busy": busy_jiffies / total_jiffies if total_jiffies else 0.0}


def main(sizes: list[int], seconds: float, keep: bool = False) -> None:
    console = Console(width=200)  # the whole table, also when piped to a file
    pipeline.MAX_CLAIMS_IN_HAND = CLAIMS_IN_HAND
    database_url = (keep and kept_database(DATABASE_URL)) or ensure_bench_database(DATABASE_URL)
    dispose_all()
    engine = get_engine(database_url)
    app = Celery("crawlcluster-bench")
    app.config_from_object("celeryconfig")
    app.conf.broker_url = REDIS_URL
    app.conf.broker_transport_options = {**app.conf.broker_transport_options, "global_keyprefix": KEY_PREFIX}
    try:
        results = [run_size(app, engine, database_url, size, seconds, keep) for size in sizes]
    finally:
        empty_broker()
        if not keep:
            drop_database(database_url)
    table = Table(title=f"scheduler alone: one project, {HOSTS} hosts, claim batch {CLAIM_BATCH}, "
                        f"{CLAIMS_IN_HAND} claims in hand, "
                        f"{FETCH_BATCH}-{settings.current().fetch_batch_max} URLs per message, "
                        f"{seconds:g}s of ticks per size")
    for column in ("pending rows", "fill s", "vacuum s", "vacuum after run s", "heap MiB", "indexes MiB",
                   "dispatched", "URLs/s", "tick median ms", "tick p90 ms", "RSS MiB", "ticks",
                   "scheduler CPU ms / 1000 URLs", "machine CPU busy"):
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(f"{r['rows']:,}", f"{r['fill_seconds']:.1f}", f"{r['vacuum_seconds']:.1f}",
                      f"{r['vacuum_after_seconds']:.1f}",
                      f"{r['heap_mib']:,.0f}", f"{r['index_mib']:,.0f}", f"{r['dispatched']:,}",
                      f"{r['urls_per_second']:,.0f}", f"{r['tick_median_ms']:.1f}", f"{r['tick_p90_ms']:.1f}",
                      f"{r['rss_mib']:.0f}", str(r["ticks"]), f"{r['cpu_ms_per_1000']:.1f}",
                      f"{r['machine_busy']:.0%} of {os.cpu_count()}")
    console.print(table)
    if len(results) > 1:
        first, last = results[0], results[-1]
        console.print("largest/smallest: tick median "
                      f"x{last['tick_median_ms'] / first['tick_median_ms']:.2f}, "
                      f"RSS x{last['rss_mib'] / first['rss_mib']:.2f}")
    console.print(f"claim query plan at {sizes[-1]:,} rows (after the run, before its vacuum):")
    for line in results[-1]["plan"]:
        console.print("  " + line)
