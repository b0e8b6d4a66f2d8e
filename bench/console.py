"""`python -m bench console`: the crawl console's pages and `crawlcluster status` timed with a
project of 10^5, 10^6 (and 10^7) rows beside 19 small ones.

Usage:
    python -m bench console [--sizes 100000,1000000] [--huge] [--requests 30] [--write-results]

Each size fills a Postgres database of the benchmark's own (CRAWLCLUSTER_BENCH_CONSOLE_DATABASE_URL,
default postgresql://postgres@127.0.0.1:5432/crawlcluster_bench_console, dropped and created
again) with ``INSERT ... SELECT generate_series``: the project ``big`` (its rows over 200 hosts:
70% done, 20% pending, 1% failed of four kinds, 0.2% queued, the rest cancelled or
disallowed; an item for every tenth done page; an hour of per-minute statistics per host) and
19 projects of 1,000 rows on 5 hosts each. The triggers of migrations 0020 and 0021 count
every row as it goes in, as in a crawl. Then VACUUM ANALYZE, and the console runs in this
process (Starlette's TestClient: no network, no broker; the pipeline strip's broker reads
are not timed) while each page is requested ``--requests`` times after two warm-ups; the
table shows the median and p95 of each.
``GROUP BY over rows`` is the count the counters replace, timed for comparison.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any, Callable

from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, text

from bench.report import write_section

DATABASE_URL = os.environ.get("CRAWLCLUSTER_BENCH_CONSOLE_DATABASE_URL",
                              "postgresql://postgres@127.0.0.1:5432/crawlcluster_bench_console")
HOSTS = 200  # of the big project
SMALL_HOSTS = 5
SMALL_PROJECTS = 19
SMALL_ROWS = 1000
CHUNK = 1_000_000

STATE = """CASE WHEN n % 1000 < 700 THEN 'done' WHEN n % 1000 < 900 THEN 'pending'
    WHEN n % 1000 < 910 THEN 'failed' WHEN n % 1000 < 912 THEN 'queued'
    WHEN n % 1000 < 950 THEN 'cancelled' ELSE 'disallowed' END"""
FILL_ROWS = f"""
INSERT INTO crawl_tasks (task_id, project, url, host, status, priority, depth, callback, retries_left,
                         next_run_at, queued_at, deadline_at, status_code, error, error_kind, fetched_at,
                         created_at, updated_at)
SELECT md5(:project || '/' || n), :project, 'https://h' || (n % :hosts) || '.example/p/' || n,
       'h' || (n % :hosts) || '.example', state, 0, 1, 'parse', 2,
       :now + (n % 3600), CASE WHEN state = 'queued' THEN :now END,
       CASE WHEN state = 'queued' THEN :now + 600 END,
       CASE WHEN state = 'done' THEN 200
            WHEN state = 'failed' THEN (ARRAY[404, 500, NULL, NULL])[n % 4 + 1] END,
       CASE WHEN state = 'failed'
            THEN (ARRAY['HTTP 404', 'HTTP 500', 'timed out', 'name not known'])[n % 4 + 1] END,
       CASE WHEN state = 'failed' THEN (ARRAY['http', 'http', 'timeout', 'dns'])[n % 4 + 1] END,
       CASE WHEN state IN ('done', 'failed') THEN :now - (n % 86400) END,
       :now - 86400, :now - (n % 86400)
FROM (SELECT n, {STATE} AS state
      FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) AS n) AS g
"""
FILL_ROBOTS = """
INSERT INTO crawl_tasks (task_id, project, url, host, status, callback, next_run_at, fetched_at, created_at,
                         updated_at)
SELECT md5(:project || '/robots/' || h), :project, 'https://h' || h || '.example/robots.txt',
       'h' || h || '.example', 'done', '__robots__', :now, :now, :now, :now
FROM generate_series(0, :hosts - 1) AS h
"""
FILL_RESULTS = """
INSERT INTO results (task_id, item_index, project, url, item, created_at, updated_at)
SELECT md5(:project || '/' || n), 0, :project, 'https://h' || (n % :hosts) || '.example/p/' || n,
       jsonb_build_object('title', 'page ' || n, 'n', n, 'words', n % 977), :now, :now
FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) AS n WHERE n % 1000 < 700 AND n % 10 = 0
"""
FILL_STATS = """
INSERT INTO crawl_stats (project, host, minute, fetched, done, failed, bytes, fetch_seconds, le_100ms)
SELECT :project, 'h' || h || '.example', floor(:now / 60) * 60 - 60 * m, 50, 45, 5, 50 * 30000, 5.0, 50
FROM generate_series(0, :hosts - 1) AS h, generate_series(0, 59) AS m
"""
FILL_HOSTS = f"""
INSERT INTO hosts (host, robots_status, robots_body, robots_fetched_at, robots_expires_at, updated_at)
SELECT 'h' || h || '.example', 'ok', 'User-agent: *\nAllow: /', :now, :now + 86400, :now
FROM generate_series(0, {HOSTS} - 1) AS h ON CONFLICT DO NOTHING
"""


def _fresh_database() -> str:
    from sqlalchemy.engine import make_url

    from crawlcluster.db import dispose_all, get_engine, normalize_database_url

    url = make_url(normalize_database_url(DATABASE_URL))
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{url.database}"'))
    admin.dispose()
    dispose_all()
    rendered = url.render_as_string(hide_password=False)
    get_engine(rendered)  # migrate
    return rendered


def _project(conn: Any, name: str, rows: int, now: float) -> None:
    conn.execute(text("INSERT INTO projects (name, spider, status, settings, tasks_created, created_at, "
                      "updated_at) VALUES (:name, 'crawlcluster.spider:LinkSpider', 'running', '{}', :rows, "
                      ":now, :now)"), {"name": name, "rows": rows, "now": now})


def _hosts(project: str) -> int:
    return HOSTS if project == "big" else SMALL_HOSTS


def fill(database_url: str, rows: int, say: Callable[[str], None]) -> float:
    """The projects, rows, results and statistics of one size; seconds it took."""
    from crawlcluster.db import get_engine

    started = time.monotonic()
    now = time.time()
    engine = get_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text(FILL_HOSTS), {"now": now})
        for name, size in [("big", rows)] + [(f"small{n:02d}", SMALL_ROWS) for n in range(SMALL_PROJECTS)]:
            _project(conn, name, size, now)
            for statement in (FILL_ROBOTS, FILL_STATS):
                conn.execute(text(statement), {"project": name, "hosts": _hosts(name), "now": now})
    for name, size in [("big", rows)] + [(f"small{n:02d}", SMALL_ROWS) for n in range(SMALL_PROJECTS)]:
        for first in range(1, size + 1, CHUNK):
            last = min(size, first + CHUNK - 1)
            with engine.begin() as conn:
                values = {"project": name, "now": now, "first": first, "last": last, "hosts": _hosts(name)}
                conn.execute(text(FILL_ROWS), values)
                conn.execute(text(FILL_RESULTS), values)
            if name == "big":
                say(f"  {last:,} of {size:,} rows ({time.monotonic() - started:.0f} s)")
    with engine.begin() as conn:
        from crawlcluster.database import counters

        counters.fold(conn)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    return time.monotonic() - started


def _timed(call: Callable[[], Any], requests: int) -> tuple[float, float]:
    for _ in range(2):
        call()
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(round(0.95 * len(times) + 0.5)) - 1)]


def measure(database_url: str, requests: int) -> list[tuple[str, float, float]]:
    """(page, median ms, p95 ms) of each page of the console and of `crawlcluster status`."""
    from starlette.testclient import TestClient

    from crawlcluster.client import Crawl, list_projects
    from crawlcluster.dashboard import projects_table
    from crawlcluster.db import get_engine
    from crawlcluster.overview import every_project_stats
    from crawlcluster.web.app import create_app

    engine = get_engine(database_url)
    one_of = "SELECT task_id FROM crawl_tasks WHERE project = 'big' AND status = :state LIMIT 1"
    with engine.connect() as conn:
        pending = conn.execute(text(one_of), {"state": "pending"}).scalar_one()
        failed = conn.execute(text(one_of), {"state": "failed"}).scalar_one()
        middle = conn.execute(text("SELECT task_id FROM results WHERE project = 'big' ORDER BY task_id "
                                   "OFFSET 500 LIMIT 1")).scalar_one()
        some_url = conn.execute(text("SELECT url FROM crawl_tasks WHERE task_id = :t"),
                                {"t": pending}).scalar_one()
    client = TestClient(create_app(database_url, broker_url="memory://"))

    def get(path: str) -> Callable[[], Any]:
        def call() -> None:
            response = client.get(path)
            assert response.status_code == 200, (path, response.status_code, response.text[:300])
        return call

    def status_all() -> None:  # what `crawlcluster status` does for every project
        projects_table(every_project_stats(database_url))

    def stats_one_by_one() -> None:  # what it did before: Crawl.stats() per project
        for p in list_projects(database_url=database_url):
            Crawl(p["name"], database_url=database_url).stats()

    def old_group_by() -> None:
        with engine.connect() as conn:
            conn.execute(text("SELECT status, count(*) FROM crawl_tasks WHERE project = 'big' "
                              "GROUP BY status")).all()

    prefix = some_url[: some_url.rindex("/") + 3]
    pages: list[tuple[str, Callable[[], Any]]] = [
        ("dashboard /", get("/")),
        ("dashboard /api/dashboard", get("/api/dashboard")),
        ("project page /projects/big", get("/projects/big")),
        ("search, prefix ?q=https://h7.example/p/12", get(f"/projects/big?q={prefix}")),
        ("search, inside URLs ?q=p/4242", get("/projects/big?q=p/4242")),
        ("URL page, pending row", get(f"/projects/big/urls/{pending}")),
        ("URL page, failed row", get(f"/projects/big/urls/{failed}")),
        ("results, first page", get("/projects/big/results")),
        ("results, a later page (by key)", get(f"/projects/big/results?after={middle}:0")),
        ("crawlcluster status (20 projects)", status_all),
        ("Crawl.stats() of each of the 20, one by one", stats_one_by_one),
        ("GROUP BY over rows (what counters replace)", old_group_by),
    ]
    return [(name, *_timed(call, requests)) for name, call in pages]


def main(sizes: list[int], requests: int = 30, write_results: bool = False) -> None:
    console = Console()
    by_size: dict[int, list[tuple[str, float, float]]] = {}
    fills: dict[int, float] = {}
    for rows in sizes:
        console.log(f"filling a project of {rows:,} rows beside {SMALL_PROJECTS} of {SMALL_ROWS:,}")
        url = _fresh_database()
        fills[rows] = fill(url, rows, console.log)
        console.log(f"filled in {fills[rows]:.0f} s; timing {requests} requests per page")
        by_size[rows] = measure(url, requests)
    table = Table(title=f"crawl console at scale: median / p95 ms over {requests} requests "
                        f"(one project of N rows, {SMALL_PROJECTS} of {SMALL_ROWS:,})")
    table.add_column("page")
    for rows in sizes:
        table.add_column(f"{rows:,} rows", justify="right")
    names = [name for name, _m, _p in by_size[sizes[0]]]
    for index, name in enumerate(names):
        table.add_row(name, *[f"{by_size[rows][index][1]:.1f} / {by_size[rows][index][2]:.1f}"
                              for rows in sizes])
    console.print(table)
    if write_results:
        lines = [f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} with "
                 f"`python -m bench console --sizes {','.join(str(s) for s in sizes)} --requests {requests}` "
                 f"on {os.cpu_count()} CPUs shared with other work (load average "
                 f"{os.getloadavg()[0]:.2f} at the end); Postgres 15, filled in "
                 + ", ".join(f"{fills[s]:.0f} s ({s:,} rows)" for s in sizes) + ".", "",
                 "| page (median / p95 ms) | " + " | ".join(f"{s:,} rows" for s in sizes) + " |",
                 "|---|" + "---:|" * len(sizes)]
        for index, name in enumerate(names):
            lines.append(f"| {name} | " + " | ".join(
                f"{by_size[s][index][1]:.1f} / {by_size[s][index][2]:.1f}" for s in sizes) + " |")
        write_section("console", "## The crawl console at 10^5–10^7 rows\n\n" + "\n".join(lines) + "\n")
