"""The console's URL search finds a project's rows in every state, queued ones included,
although ix_crawl_tasks_url leaves queued rows out (migration 0023: a claim adds no entry
to it); on Postgres the prefix search still reads that index."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select, text

from crawlcluster.database import tasks
from crawlcluster.database.console import (
    _SEARCH_COLUMNS,
    NOT_QUEUED,
    _url_key,
    search_urls,
    urls_starting_with,
)
from crawlcluster.db import get_engine
from crawlcluster.schema import crawl_tasks, projects
from crawlcluster.urls import task_id, url_host


def _row(url: str, status: str) -> dict:
    now = time.time()
    return {"task_id": task_id("s", url), "project": "s", "url": url, "host": url_host(url), "status": status,
            "priority": 0, "depth": 0, "callback": "parse", "fetch": None, "data": None, "retries_left": 0,
            "next_run_at": now, "created_at": now, "updated_at": now}


@pytest.fixture(params=["postgres", "sqlite"])
def database(request):
    url = request.getfixturevalue("pg" if request.param == "postgres" else "sqlite_url")
    now = time.time()
    with get_engine(url).begin() as conn:
        conn.execute(projects.insert().values(name="s", spider="crawlcluster.spider:LinkSpider",
                                              status="running", settings={}, tasks_created=0, created_at=now,
                                              updated_at=now))
        tasks.insert_tasks(conn, "s", [_row(f"http://shop.test/item/{i}", state)
                                       for i, state in enumerate(["pending", "queued", "done", "failed",
                                                                  "queued", "done"])])
        tasks.insert_tasks(conn, "s", [_row("http://blog.test/queued-post", "queued")])
    return url


def test_prefix_and_substring_searches_find_queued_rows_beside_the_others(database):
    with get_engine(database).connect() as conn:
        by_prefix = urls_starting_with(conn, "s", "http://shop.test/item/", 50)
        assert [r["url"] for r in by_prefix] == [f"http://shop.test/item/{i}" for i in range(6)]
        assert [r["status"] for r in by_prefix] == ["pending", "queued", "done", "failed", "queued", "done"]
        assert [r["url"] for r in urls_starting_with(conn, "s", "http://shop.test/item/", 3)] == \
            [f"http://shop.test/item/{i}" for i in range(3)]
        found, _ = search_urls(conn, "s", "queued-post", 10)
        assert [r["url"] for r in found] == ["http://blog.test/queued-post"]
        found, _ = search_urls(conn, "s", "item/4", 10)
        assert [(r["url"], r["status"]) for r in found] == [("http://shop.test/item/4", "queued")]


def test_the_url_index_leaves_queued_rows_out_and_the_prefix_search_reads_it(pg):
    with get_engine(pg).connect() as conn:
        definition = conn.execute(text("SELECT indexdef FROM pg_indexes "
                                       "WHERE indexname = 'ix_crawl_tasks_url'")).scalar_one()
        assert definition.endswith("WHERE ((status)::text <> 'queued'::text)")
        conn.execute(text("SET enable_seqscan = off"))  # a tiny table: ask whether the index can serve
        key = _url_key(conn)
        stmt = (select(*_SEARCH_COLUMNS).where(crawl_tasks.c.project == "p", NOT_QUEUED, key >= "http://a")
                .order_by(key).limit(5))
        compiled = stmt.compile(conn, compile_kwargs={"literal_binds": True})
        plan = "\n".join(row[0] for row in conn.execute(text(f"EXPLAIN {compiled}")))
        assert "ix_crawl_tasks_url" in plan, plan
