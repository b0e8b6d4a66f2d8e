"""Past one Postgres: the dispatch rate with the frontier split by host over K databases.

    python -m bench scaling [--rows 1000000] [--splits 1,2] [--seconds 15]

What docs/scaling.md proposes past one Postgres server is a frontier partitioned by host
hash, each part with its own scheduler (beat) holding its own lease. This measures the part
of that which runs on one machine: for each K in ``--splits``, K databases on the local
Postgres (``crawlcluster_bench_split_<k>_<i>``, dropped at the end), each holding the rows
of the hosts whose number modulo K is i (``--rows`` in all, the 1,000-host frontier of
``python -m bench scheduler``), and K scheduler processes, each running the unchanged
:class:`~crawlcluster.dispatch.dispatcher.Dispatcher` on its own database, all publishing
to one Redis. The processes fill their databases, wait for each other, then tick for
``--seconds`` side by side (rounds of ten ticks, the rows sent marked done between rounds,
as in bench/scheduler.py). Reports each process's URLs/s, their sum, and the sum against
K=1. The split pays only when Postgres or the scheduler's own core is the limit, and the
machine has cores to spare: on a 2-core machine shared with other work it may not.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from typing import Any

from rich.console import Console
from rich.table import Table

BASE_URL = os.environ.get("CRAWLCLUSTER_BENCH_SCHED_DATABASE_URL",
                          "postgresql://postgres@127.0.0.1:5432/crawlcluster_bench_sched")


def _one_part(database_url: str, rows: int, part: int, parts: int, seconds: float, barrier: Any,
              results: Any) -> None:
    """A scheduler process on its own part of the frontier (run in a child process)."""
    from celery import Celery

    from bench import scheduler
    from bench.site300 import REDIS_URL
    from crawlcluster.db import dispose_all, get_engine

    try:
        url = scheduler.ensure_bench_database(database_url)
        dispose_all()
        engine = get_engine(url)
        app = Celery("crawlcluster-bench-split")
        app.config_from_object("celeryconfig")
        app.conf.broker_url = REDIS_URL
        app.conf.broker_transport_options = {**app.conf.broker_transport_options,
                                             "global_keyprefix": scheduler.KEY_PREFIX}
        fill_seconds, _ = scheduler.fill(engine, rows, part, parts)
        barrier.wait(timeout=1800)  # every part filled: tick side by side
        load = os.getloadavg()[0]
        outcome = scheduler.dispatch(app, engine, url, seconds)
        results.put({"part": part, "fill_seconds": fill_seconds, "load": load, **outcome})
    except BaseException as exc:  # noqa: BLE001 - reported by the parent, which then stops
        barrier.abort()
        results.put({"part": part, "error": f"{type(exc).__name__}: {exc}"})
    finally:
        from bench.scheduler import drop_database

        drop_database(database_url)


def run_split(rows: int, parts: int, seconds: float) -> list[dict[str, Any]]:
    """K=parts scheduler processes, each on its own database; one result per process."""
    context = multiprocessing.get_context("spawn")  # each child its own engines and key prefix
    barrier = context.Barrier(parts)
    results = context.Queue()
    server, _, name = BASE_URL.rpartition("/")
    children = [context.Process(target=_one_part, args=(f"{server}/{name}_split_{parts}_{part}", rows, part,
                                                        parts, seconds, barrier, results))
                for part in range(parts)]
    for child in children:
        child.start()
    out = [results.get(timeout=3600) for _ in children]
    for child in children:
        child.join(timeout=120)
    errors = [r["error"] for r in out if "error" in r]
    if errors:
        raise RuntimeError("; ".join(errors))
    return sorted(out, key=lambda r: r["part"])


def main(rows: int, splits: list[int], seconds: float) -> None:
    console = Console(width=200)
    table = Table(title=f"frontier split by host over K databases: {rows:,} rows in all, one scheduler "
                        f"process per database, {seconds:g}s of ticks side by side, load average at start "
                        f"{os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs")
    for column in ("K databases", "rows each", "URLs/s per process", "URLs/s total", "x K=1",
                   "tick median ms", "scheduler CPU ms / 1000 URLs", "machine CPU busy", "load at start"):
        table.add_column(column, justify="right")
    single: float | None = None
    for parts in splits:
        started = time.monotonic()
        results = run_split(rows, parts, seconds)
        total = sum(r["urls_per_second"] for r in results)
        single = total if single is None and parts == 1 else single
        table.add_row(str(parts), f"{rows // parts:,}",
                      ", ".join(f"{r['urls_per_second']:,.0f}" for r in results), f"{total:,.0f}",
                      f"{total / single:.2f}" if single else "-",
                      ", ".join(f"{r['tick_median_ms']:.0f}" for r in results),
                      ", ".join(f"{r['cpu_ms_per_1000']:.1f}" for r in results),
                      ", ".join(f"{r['machine_busy']:.0%}" for r in results),
                      ", ".join(f"{r['load']:.1f}" for r in results))
        console.print(f"K={parts}: {time.monotonic() - started:.0f}s with the fill")
    console.print(table)
