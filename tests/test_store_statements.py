"""The store stage's and the parse stage's write statements, on Postgres and SQLite: SQLAlchemy
compiles each once per process (a second batch of the same shape hits the statement cache for
every statement it runs), and what they write is exact: items, row states, statistics, tallies,
and the new rows of a batch of links, crawler-trap rows (with a column more) among them."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.engine.default import CACHE_HIT
from sqlalchemy.engine.interfaces import ExecuteStyle

import crawlcluster
from crawlcluster.database import claims, stats, tallies
from crawlcluster.database.tasks import insert_tasks
from crawlcluster.db import get_engine
from crawlcluster.schema import crawl_tasks, projects, results
from crawlcluster.urls import task_id
from workers.store import store_pages


@pytest.fixture(params=["postgres", "sqlite"])
def database(request: pytest.FixtureRequest) -> str:
    if request.param == "postgres":
        return request.getfixturevalue("pg")
    return request.getfixturevalue("sqlite_url")


class CacheMisses:
    """The statements an engine ran that SQLAlchemy compiled for the run (not found in its cache),
    and those it sent row by row (the driver's executemany: a round trip per row on Postgres)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.missed: list[str] = []
        self.row_by_row: list[str] = []
        self.ran = 0

    def __enter__(self) -> CacheMisses:
        event.listen(self.engine, "after_cursor_execute", self._seen)
        return self

    def __exit__(self, *_exc: object) -> None:
        event.remove(self.engine, "after_cursor_execute", self._seen)

    def _seen(self, _conn: Any, _cursor: Any, statement: str, _params: Any, context: Any,
              _many: bool) -> None:
        if context is None or not getattr(context, "compiled", None):
            return  # driver-level SQL (a pool ping, SET LOCAL): nothing to compile
        self.ran += 1
        if context.cache_hit is not CACHE_HIT:
            self.missed.append(" ".join(statement.split())[:120])
        if context.execute_style is ExecuteStyle.EXECUTEMANY:
            self.row_by_row.append(" ".join(statement.split())[:120])


def outcomes(project: str, urls: list[str], offset: int) -> list[dict[str, Any]]:
    """One store batch: done pages with 0-2 items each, a final 404 and a retried 503."""
    pages: list[dict[str, Any]] = []
    for n, url in enumerate(urls[:-2]):
        pages.append({"id": task_id(project, url), "url": url, "status": "done", "code": 200,
                      "fetch_seconds": 0.01 * (n + 1), "wire_bytes": 100 + n,
                      "items": [{"page": offset + n, "i": i} for i in range(n % 3)]})
    lost, busy = urls[-2:]
    pages.append({"id": task_id(project, lost), "url": lost, "status": "failed", "code": 404, "kind": "http",
                  "error": "HTTP 404 Not Found", "fetch_seconds": 0.02, "wire_bytes": 10})
    pages.append({"id": task_id(project, busy), "url": busy, "status": "failed", "code": 503, "kind": "http",
                  "error": "HTTP 503 Service Unavailable", "retry": True, "fetch_seconds": 0.03,
                  "wire_bytes": 10})
    return pages


def test_store_batches_hit_the_statement_cache_and_write_exact_rows(database: str) -> None:
    urls = [f"http://{host}.example/{n}" for n in range(12) for host in ("a", "b")]
    first, second = urls[:12], urls[12:]
    crawlcluster.submit(urls, project="cached", settings={"retries": 2}, database_url=database)
    engine = get_engine(database)
    with engine.begin() as conn:
        assert len(claims.claim_due_tasks(conn, "cached", 100, 60)) == len(urls)
    assert store_pages(engine, "cached", outcomes("cached", first, 0)) == \
        {"done": 10, "failed": 1, "retried": 1, "items": 9}
    started = time.perf_counter()
    with CacheMisses(engine) as cache:
        assert store_pages(engine, "cached", outcomes("cached", second, 100)) == \
            {"done": 10, "failed": 1, "retried": 1, "items": 9}
    print(f"\n{engine.dialect.name}: a second store batch ran {cache.ran} statements, "
          f"{len(cache.missed)} compiled, in {time.perf_counter() - started:.4f}s")
    assert cache.ran >= 8 and cache.missed == []
    if engine.dialect.name == "postgresql":  # items, statistics and tallies in a round trip each
        assert cache.row_by_row == []

    with engine.connect() as conn:
        states = dict(conn.execute(select(crawl_tasks.c.status, func.count()).where(
            crawl_tasks.c.project == "cached").group_by(crawl_tasks.c.status)).all())
        items = conn.execute(select(results.c.item).where(results.c.project == "cached")
                             .order_by(results.c.task_id, results.c.item_index)).scalars().all()
        totals = stats.sums(conn, "cached")
        counted = tallies.project_tallies(conn, "cached")
    assert states == {"done": 20, "failed": 2, "pending": 2}
    assert sorted((item["page"], item["i"]) for item in items) == sorted(
        (offset + n, i) for offset in (0, 100) for n in range(10) for i in range(n % 3))
    assert (totals.done, totals.failed, totals.retried, totals.fetched) == (20, 2, 2, 24)
    assert totals.bytes == 2 * (sum(100 + n for n in range(10)) + 20)
    assert counted == {"status": {"200": 20, "404": 2, "503": 2}, "items": {"scraped": 18}}

    # the same outcomes again (a redelivered message) change and count nothing
    assert store_pages(engine, "cached", outcomes("cached", second, 100))["done"] == 0
    with engine.connect() as conn:
        assert stats.sums(conn, "cached").done == 20
        assert conn.execute(select(func.count()).select_from(results)).scalar() == 18


def test_new_links_go_in_once_with_a_trap_rows_extra_column_and_a_cached_statement(database: str) -> None:
    crawlcluster.submit(["http://links.example/"], project="links", database_url=database)
    engine = get_engine(database)
    now = time.time()

    def rows(names: list[str]) -> list[dict[str, Any]]:
        found = []
        for name in names:
            url = f"http://links.example/{name}"
            row = {"task_id": task_id("links", url), "project": "links", "url": url, "host": "links.example",
                   "status": "pending", "depth": 1, "callback": "parse", "next_run_at": now,
                   "created_at": now, "updated_at": now}
            if name.startswith("trap"):
                row.update(status="failed", error="a crawler trap", error_kind="trap")
            found.append(row)
        return found

    new: set[str] = set()
    with engine.begin() as conn:
        assert insert_tasks(conn, "links", rows(["a", "b", "trap1"]), new_ids=new) == 3
    with CacheMisses(engine) as cache, engine.begin() as conn:
        # b is known; c, d and a trap row are new, in one batch whose rows differ in their keys
        assert insert_tasks(conn, "links", rows(["b", "c", "trap2", "d", "c"]), new_ids=new) == 3
    assert new == {task_id("links", f"http://links.example/{n}") for n in ("c", "d", "trap2")}
    assert cache.missed == []
    with engine.connect() as conn:
        created = conn.execute(select(projects.c.tasks_created).where(projects.c.name == "links")).scalar()
        errors = dict(conn.execute(select(crawl_tasks.c.url, crawl_tasks.c.error)
                                   .where(crawl_tasks.c.project == "links")).all())
    assert created == 7 and len(errors) == 7
    assert errors["http://links.example/trap2"] == "a crawler trap"
    assert errors["http://links.example/d"] is None
