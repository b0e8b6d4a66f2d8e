"""A page that kills or hangs its parse worker, a page whose links the frontier cannot hold,
and a parse task that always raises: each fails what it must, with a readable row, and the
crawl ends. Real worker and beat processes on the test Redis and Postgres, a scripted site
whose request log is the ground truth."""

from __future__ import annotations

import time
from typing import Iterator

import pytest
from sqlalchemy import select

import crawlcluster
from crawlcluster import db, settings
from crawlcluster.messages import page_message
from crawlcluster.schema import crawl_tasks
from tests.outcomes import assert_statistics_equal_rows
from tests.scripted_site import ScriptedSite, page
from workers.parser import process_pages


@pytest.fixture
def tree() -> Iterator[ScriptedSite]:
    """``/`` links to /p0 ... /p{n-1}; each page is a leaf."""
    site = ScriptedSite()
    yield site
    site.stop()


def _serve_tree(site: ScriptedSite, pages: int) -> list[str]:
    paths = [f"/p{i}" for i in range(pages)]
    site.route("/", lambda _n, _h: page("home", tuple(paths)))
    for path in paths:
        site.route(path, lambda _n, _h, path=path: page(path))
    return paths


def _rows(project: str) -> dict[str, dict]:
    with db.get_engine().connect() as conn:
        stmt = select(crawl_tasks).where(crawl_tasks.c.project == project,
                                         crawl_tasks.c.callback != "__robots__")
        rows = conn.execute(stmt).mappings().all()
    return {row["url"]: dict(row) for row in rows}


def _start(processes, *parse_args: str) -> None:
    processes.worker("fetch", "fetch")
    processes.worker("parse", "parse", *parse_args)
    processes.worker("store", "store")
    processes.beat()


def test_a_callback_that_kills_its_worker_fails_its_page_only_and_the_crawl_ends(tree, processes, pg):
    paths = _serve_tree(tree, 100)
    processes.env["CRAWLCLUSTER_QUEUED_DEADLINE_SECONDS"] = "30"
    _start(processes, "-c", "2")
    started = time.monotonic()
    crawl = crawlcluster.submit("tests.poison_spiders:TreeSpider", project="poison",
                                spider_kwargs={"base_url": tree.url, "exit_on": "/p37"})
    stats = crawl.wait(timeout=180)
    took = time.monotonic() - started
    rows = _rows("poison")
    poison = rows[tree.url + "/p37"]
    assert poison["status"] == "failed" and poison["error_kind"] == "crash", poison
    assert "parse worker process died while processing this page, 2 times" in poison["error"]
    others = [tree.url + p for p in paths if p != "/p37"] + [tree.url + "/"]
    not_done = [url for url in others if rows[url]["status"] != "done"]
    assert not not_done, not_done
    assert all(tree.counts[p] == 1 for p in paths + ["/"]), {p: n for p, n in tree.counts.items() if n != 1}
    assert stats["pages"]["done"] == 100 and stats["pages"]["failed"] == 1, stats
    assert_statistics_equal_rows(pg, "poison")
    assert processes.procs["parse"].poll() is None  # the worker is still up; its pool replaced the child
    print(f"poison page: crawl of 101 pages finished in {took:.1f}s, 0 pages fetched twice")


@pytest.mark.long_fault
def test_a_callback_past_the_time_limit_fails_its_page_and_the_crawl_ends(tree, processes, pg):
    paths = _serve_tree(tree, 20)
    processes.env["CRAWLCLUSTER_PARSE_TIME_LIMIT_SECONDS"] = "3"
    _start(processes, "-c", "2")
    started = time.monotonic()
    crawl = crawlcluster.submit("tests.poison_spiders:TreeSpider", project="hang",
                                spider_kwargs={"base_url": tree.url, "sleep_on": "/p5", "stubborn_on": "/p6"})
    stats = crawl.wait(timeout=180)
    took = time.monotonic() - started
    rows = _rows("hang")
    slept, stubborn = rows[tree.url + "/p5"], rows[tree.url + "/p6"]
    assert slept["status"] == "failed" and "ran past the parse time limit" in slept["error"], slept
    # swallowed the soft limit: killed at the hard one, twice, then failed
    assert stubborn["status"] == "failed" and stubborn["error_kind"] == "crash", stubborn
    assert stats["pages"]["done"] == 19 and stats["pages"]["failed"] == 2, stats
    assert all(tree.counts[p] == 1 for p in paths), dict(tree.counts)
    print(f"hanging pages: crawl of 21 pages finished in {took:.1f}s")


def test_a_parse_task_that_always_raises_ends_its_rows_after_max_dispatches(tree, processes, pg):
    tree.route("/a", lambda _n, _h: page("a"))
    tree.route("/b", lambda _n, _h: page("b"))
    processes.env.update({"CRAWLCLUSTER_QUEUED_DEADLINE_SECONDS": "2", "CRAWLCLUSTER_MAX_DISPATCHES": "3",
                          "CRAWLCLUSTER_TEST_BROKEN_SPIDER": "1"})
    _start(processes)
    crawl = crawlcluster.submit("tests.poison_spiders:BrokenSpider", project="broken",
                                spider_kwargs={"base_url": tree.url})
    stats = crawl.wait(timeout=120)
    rows = _rows("broken")
    for path in ("/a", "/b"):
        row = rows[tree.url + path]
        assert row["status"] == "failed", row
        assert row["error"] == ("the parse task raised RuntimeError: the spider's service is unreachable "
                                "(sent to the workers 3 times without an outcome (max_dispatches=3))"), row
        assert tree.counts[path] == 3  # fetched once per dispatch, then never again
    assert stats["pages"]["failed"] == 2, stats
    assert_statistics_equal_rows(pg, "broken")  # rows the scheduler failed are counted too


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_a_page_with_20000_links_and_a_400_character_host_parses(database, request, tree):
    url = request.getfixturevalue("sqlite_url" if database == "sqlite" else "pg")
    engine = db.get_engine(url)
    settings.configure(max_links_per_page=30_000)  # the default keeps 10,000 (tests/test_page_bounds.py)
    request.addfinalizer(settings.reset)
    links = tuple(f"/l{i}" for i in range(20_000)) + ("http://" + "h" * 400 + ".example/x", "/" + "x" * 5000)
    crawlcluster.submit("tests.poison_spiders:TreeSpider", project="wide", database_url=url,
                                spider_kwargs={"base_url": tree.url})
    status, headers, body = page("wide", links)
    pages = [page_message({"id": crawl_row_id(engine, tree.url + "/"), "url": tree.url + "/"}, status,
                          {"content-type": headers["Content-Type"]}, body, seconds=0.1, wire_bytes=len(body))]
    outcomes, added, dropped = process_pages(engine, "wide", pages)
    assert outcomes[0]["status"] == "done", outcomes[0]
    assert added == 20_000 and dropped == 2
    with engine.connect() as conn:
        hosts = conn.execute(select(crawl_tasks.c.host)
                             .where(crawl_tasks.c.project == "wide")).scalars().all()
    assert len(hosts) == 20_001 and max(len(h) for h in hosts) < 300


def crawl_row_id(engine, url: str) -> str:
    with engine.connect() as conn:
        return conn.execute(select(crawl_tasks.c.task_id).where(crawl_tasks.c.url == url)).scalar_one()
