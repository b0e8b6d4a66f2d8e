"""The row counters (migration 0020, :mod:`crawlcluster.database.counters`) are exact: every
kind of transition (insert, duplicate insert, claim, done, failed, retry, resend, disallowed,
cancel, resume, retry of failures, re-seed, results replaced, a rolled-back transaction, the
deletion of a cancelled project) driven through the real database functions from several
threads at once, with housekeeping's fold running beside them, leaves counters equal to
COUNT(*) over the tables, on Postgres and on SQLite; and a database migrated with rows in it
starts with counters equal to them."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import OperationalError

from crawlcluster.database import claims, counters, outcomes, tasks
from crawlcluster.database import projects as lifecycle
from crawlcluster.database.results import replace_items
from crawlcluster.db import get_engine
from crawlcluster.scheduling import RetryRules
from crawlcluster.schema import ROBOTS_CALLBACK, TASK_STATES, crawl_tasks, results
from tests.test_frontier import make_project, make_row

PROJECTS = ("alpha", "beta", "gamma")
THREADS = 4
ROUNDS = 25


@pytest.fixture(params=["postgres", "sqlite"])
def database(request: pytest.FixtureRequest) -> str:
    if request.param == "postgres":
        return request.getfixturevalue("pg")
    return request.getfixturevalue("sqlite_url")


def _row(project: str, url: str, **extra: Any) -> dict[str, Any]:
    row = make_row(project, url)
    row.update(retries_left=1, **extra)
    return row


class Rollback(Exception):
    """Raised inside a transaction to roll it back."""


def _tx(engine: Any, work: Any) -> Any:
    """``work(conn)`` in a transaction, again when Postgres ends it for a deadlock (whole-project
    updates such as a cancel meet claims' row locks in another order; a deadlocked
    transaction rolls back, which the counters must survive too)."""
    for attempt in range(5):
        try:
            with engine.begin() as conn:
                return work(conn)
        except OperationalError as exc:
            if "deadlock" not in str(exc) or attempt == 4:
                raise
    return None


def _step(engine: Any, rng: random.Random, worker: int, round_: int) -> None:
    """One round of every kind of transition on one of the shared projects, each in its own
    transaction, in an order that differs between workers."""
    project = rng.choice(PROJECTS)
    hosts = [f"h{n}.example" for n in range(3)]
    now = time.time()
    fresh = [_row(project, f"http://{rng.choice(hosts)}/w{worker}/r{round_}/{n}", depth=rng.choice((0, 1)))
             for n in range(12)]
    # links every worker finds: duplicate inserts that must count once
    shared = [_row(project, f"http://{host}/shared/{round_ % 5}") for host in hosts]
    robots = [_row(project, f"http://{host}/robots.txt", callback=ROBOTS_CALLBACK) for host in hosts]
    _tx(engine, lambda conn: tasks.insert_tasks(conn, project, fresh + shared + robots))
    claimed = _tx(engine, lambda conn: claims.claim_due_tasks(conn, project, 12, 60.0))
    ids = [row["task_id"] for row in claimed]
    rng.shuffle(ids)
    done, failed, retry, resend = ids[:4], ids[4:6], ids[6:8], ids[8:10]
    banned = [row["task_id"] for row in fresh if row["task_id"] not in ids][:2]  # still pending

    def store(conn: Any) -> None:
        outcomes.record_outcomes(conn, [{"task_id": t, "status": "done", "status_code": 200} for t in done])
        outcomes.record_outcomes(conn, [{"task_id": t, "status": "failed", "status_code": 500,
                                         "error": "HTTP 500", "error_kind": "http"} for t in failed])
        replace_items(conn, done, [{"task_id": t, "item_index": i, "project": project, "url": "u",
                                    "item": {"n": i}, "created_at": now, "updated_at": now}
                                   for t in done for i in range(rng.randint(0, 3))])

    def retry_resend_ban(conn: Any) -> None:
        outcomes.schedule_retries(conn, [{"id": t, "retry": True, "error": "timed out", "kind": "timeout"}
                                         for t in retry], lambda options: RetryRules.of_row(options))
        claims.resend_soon(conn, resend, now)
        claims.mark_disallowed(conn, banned, "robots.txt forbids it")

    def rolled_back(conn: Any) -> None:  # changes that never commit count nothing
        tasks.insert_tasks(conn, project, [_row(project, f"http://h0.example/rolled/{worker}/{round_}")])
        tasks.cancel_pending(conn, project)
        raise Rollback

    def user_action(conn: Any) -> None:
        choice = round_ % 4
        if choice == 0:
            tasks.cancel_pending(conn, project)
        elif choice == 1:
            tasks.reopen_cancelled(conn, project)
        elif choice == 2:
            tasks.reopen_failed_rows(conn, project, lambda options: RetryRules.of_row(options))
        else:
            tasks.reopen_start_rows(conn, project, 0.0, time.time() + 1)  # re-seed

    _tx(engine, store)
    _tx(engine, retry_resend_ban)
    try:
        _tx(engine, rolled_back)
    except Rollback:
        pass
    _tx(engine, user_action)
    _tx(engine, lambda conn: claims.reclaim_stale_tasks(conn, 5, deadline_seconds=0.0, now=time.time() + 120))


def _truth(conn: Any) -> dict[str, dict[str, Any]]:
    """The counters' figures computed with COUNT(*) over crawl_tasks and results."""
    out: dict[str, dict[str, Any]] = {}
    robots = crawl_tasks.c.callback == ROBOTS_CALLBACK
    for project, is_robots, status, rows in conn.execute(
            select(crawl_tasks.c.project, robots, crawl_tasks.c.status, func.count())
            .group_by(crawl_tasks.c.project, robots, crawl_tasks.c.status)):
        entry = out.setdefault(project, {"pages": dict.fromkeys(TASK_STATES, 0),
                                         "robots": dict.fromkeys(TASK_STATES, 0), "items": 0})
        entry["robots" if is_robots else "pages"][status] += rows
    for project, rows in conn.execute(select(results.c.project, func.count()).group_by(results.c.project)):
        out.setdefault(project, {"pages": dict.fromkeys(TASK_STATES, 0),
                                 "robots": dict.fromkeys(TASK_STATES, 0), "items": 0})["items"] = rows
    for entry in out.values():
        entry["rows"] = {s: entry["pages"][s] + entry["robots"][s] for s in TASK_STATES}
    return out


def _host_truth(conn: Any, project: str) -> dict[str, dict[str, int]]:
    table: dict[str, dict[str, int]] = {}
    for host, status, rows in conn.execute(
            select(crawl_tasks.c.host, crawl_tasks.c.status, func.count())
            .where(crawl_tasks.c.project == project, crawl_tasks.c.callback != ROBOTS_CALLBACK)
            .group_by(crawl_tasks.c.host, crawl_tasks.c.status)):
        table.setdefault(host, {})[status] = rows
    return table


def _assert_exact(engine: Any) -> None:
    with engine.connect() as conn:
        truth = _truth(conn)
        kept = {name: entry for name, entry in counters.counts(conn).items()
                if any(entry["rows"].values()) or entry["items"]}
        assert kept == truth
        for project in truth:
            assert counters.host_counts(conn, project) == _host_truth(conn, project)


def test_counters_equal_count_star_after_concurrent_transitions(database: str) -> None:
    engine = get_engine(database)
    with engine.begin() as conn:
        for name in (*PROJECTS, "doomed"):
            make_project(conn, name)
        tasks.insert_tasks(conn, "doomed", [_row("doomed", f"http://d.example/{n}") for n in range(30)])
    errors: list[BaseException] = []
    stop = threading.Event()

    def work(worker: int) -> None:
        rng = random.Random(worker)
        try:
            for round_ in range(ROUNDS):
                _step(engine, rng, worker, round_)
        except BaseException as exc:  # noqa: BLE001 - reported by the test's thread
            errors.append(exc)

    def fold_beside() -> None:
        deadline = time.monotonic() + 300
        while not stop.is_set() and time.monotonic() < deadline:
            with engine.begin() as conn:
                counters.fold(conn)
            stop.wait(0.02)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(THREADS)]
    folder = threading.Thread(target=fold_beside)
    started = time.monotonic()
    folder.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    stop.set()
    folder.join(timeout=30)
    assert not errors, errors
    with engine.connect() as conn:
        pending = counters.pending_deltas(conn)
    print(f"\n{engine.dialect.name}: {THREADS} threads x {ROUNDS} rounds in "
          f"{time.monotonic() - started:.1f} s; {pending} deltas not folded at the end")
    _assert_exact(engine)  # totals plus the deltas not folded yet
    # a cancelled project deleted (its rows and results go; its counters with them)
    with engine.begin() as conn:
        lifecycle.cancel(conn, "doomed")
        tasks.cancel_pending(conn, "doomed")
        lifecycle.schedule_deletion(conn, "doomed", 0.0)
    with engine.begin() as conn:
        assert lifecycle.delete_due_projects(conn, 7, time.time()) == []  # a batch of 7 rows at a time
    _assert_exact(engine)
    for _ in range(10):
        with engine.begin() as conn:
            deleted = lifecycle.delete_due_projects(conn, 7, time.time())
            counters.forget(conn, deleted)
        if deleted:
            break
    assert deleted == ["doomed"]
    with engine.begin() as conn:
        counters.fold(conn)
        assert counters.pending_deltas(conn) == 0
        left = conn.execute(text("SELECT count(*) FROM task_counts WHERE project = 'doomed'")).scalar()
        assert left == 0
    _assert_exact(engine)
    with engine.connect() as conn:
        totals = counters.counts(conn)
    assert sum(totals[p]["rows"]["done"] for p in PROJECTS) > 0  # the rounds did move rows
    assert sum(totals[p]["items"] for p in PROJECTS) > 0


def test_migration_fills_the_counters_from_the_rows_already_there(database: str) -> None:
    """Rows written before the counters existed (triggers dropped, counters emptied, as a
    database at revision 0019 has them) are counted by the migration that adds them."""
    engine = get_engine(database)
    with engine.begin() as conn:
        make_project(conn, "old")
        tasks.insert_tasks(conn, "old", [_row("old", f"http://o{n % 3}.example/{n}") for n in range(40)])
        claims.claim_due_tasks(conn, "old", 10, 60.0)
    from alembic import command

    from crawlcluster.db import _alembic_config

    with engine.begin() as conn:
        command.downgrade(_alembic_config(conn), "0019")
    with engine.begin() as conn:
        tasks.insert_tasks(conn, "old", [_row("old", f"http://o.example/late/{n}") for n in range(5)])
        command.upgrade(_alembic_config(conn), "head")
    _assert_exact(engine)
    with engine.connect() as conn:
        assert counters.project_counts(conn, "old")["rows"]["pending"] == 35


def test_all_time_figures_equal_the_sums_of_crawl_stats_after_concurrent_store_batches(database: str) -> None:
    """The store stage's upserts into crawl_stats (new minutes and minutes added to), from
    several threads, some rolled back, with housekeeping's fold beside them: the all-time
    figures per project (migration 0022, totals plus deltas) equal SUM over crawl_stats."""
    from crawlcluster.database import overview
    from crawlcluster.database import stats as stat_rows
    from crawlcluster.schema import STAT_TOTAL_COLUMNS, crawl_stats

    engine = get_engine(database)
    errors: list[BaseException] = []
    stop = threading.Event()

    def batches(worker: int) -> None:
        rng = random.Random(worker)
        try:
            for round_ in range(ROUNDS):
                project = rng.choice(PROJECTS)
                pages = [{"id": f"{worker}-{round_}-{n}", "url": f"http://h{rng.randrange(3)}.example/{n}",
                          "status": rng.choice(("done", "failed")), "fetch_seconds": rng.random(),
                          "wire_bytes": rng.randrange(50_000),
                          "bounds": {"links_over_limit": rng.randrange(3)}}
                         for n in range(rng.randrange(1, 6))]
                minute = 1_000_000.0 + 60 * rng.randrange(4)
                try:
                    with engine.begin() as conn:
                        stat_rows.record_batch(conn, project, pages, {pages[0]["id"]}, now=minute)
                        if rng.random() < 0.2:
                            raise Rollback()
                except Rollback:
                    pass
                except OperationalError as exc:  # two upserts of the same minutes met in another order
                    if "deadlock" not in str(exc):
                        raise
        except BaseException as exc:  # noqa: BLE001 - reported by the test's thread
            errors.append(exc)

    def fold_beside() -> None:
        deadline = time.monotonic() + 300
        while not stop.is_set() and time.monotonic() < deadline:
            with engine.begin() as conn:
                counters.fold(conn)
            stop.wait(0.02)

    threads = [threading.Thread(target=batches, args=(n,)) for n in range(THREADS)]
    folder = threading.Thread(target=fold_beside)
    folder.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    stop.set()
    folder.join(timeout=30)
    assert not errors, errors
    for fold_first in (False, True):
        with engine.begin() as conn:
            if fold_first:
                counters.fold(conn)
            kept = overview.all_time_sums(conn, list(PROJECTS))
            columns = [func.sum(getattr(crawl_stats.c, name)).label(name) for name in STAT_TOTAL_COLUMNS]
            summed = {row.project: row for row in conn.execute(
                select(crawl_stats.c.project, *columns).group_by(crawl_stats.c.project))}
        assert set(kept) == set(summed) and summed
        for project, row in summed.items():
            for name in STAT_TOTAL_COLUMNS:
                expected = pytest.approx(getattr(row, name), abs=1e-6)
                assert getattr(kept[project], name) == expected, (project, name)
    assert sum(row.done + row.failed for row in summed.values()) > 0
