"""The contract between stages: the builders give the shapes the TypedDicts declare, a
fetched and a rendered page differ only where they should, and robots.txt pages take the
worker side's one path (workers/robots.py) through parse and store."""

from __future__ import annotations

import zlib

from sqlalchemy import select, update

import crawlcluster
from crawlcluster.db import get_engine
from crawlcluster.errors import FetchError
from crawlcluster.messages import (
    CALLBACK,
    COMPRESSED,
    LAST_MODIFIED,
    FetchEntry,
    Outcome,
    Page,
    carry_cost,
    decompress_body,
    entry_callback,
    failure_message,
    not_modified_message,
    page_entry,
    page_message,
    task_entry,
)
from crawlcluster.schema import hosts, projects
from crawlcluster.urls import task_id
from workers.robots import record_robots_outcomes, robots_outcomes
from workers.store import store_pages

ENTRY: FetchEntry = {"id": "t1", "url": "http://e.test/a", "depth": 2, "cb": "parse_item", "data": {"k": 1},
                     "fetch": {"method": "GET"}, "etag": '"v1"', "lm": "Mon, 01 Jan 2024 00:00:00 GMT"}
BODY = b"<html>" + b"x" * 1000 + b"</html>"


def test_the_short_wire_keys_are_the_typed_dicts_keys() -> None:
    assert (CALLBACK, LAST_MODIFIED, COMPRESSED) == ("cb", "lm", "z")
    assert {CALLBACK, LAST_MODIFIED} <= FetchEntry.__optional_keys__
    assert {CALLBACK, COMPRESSED} <= Page.__optional_keys__
    assert {CALLBACK, LAST_MODIFIED} <= Outcome.__optional_keys__


def test_an_entry_of_a_row_with_validators_asks_whether_the_page_changed() -> None:
    row = {"task_id": "t", "url": "http://e.test/", "etag": '"v"', "last_modified": "yesterday"}
    assert task_entry(row) == {"id": "t", "url": "http://e.test/", "etag": '"v"', "lm": "yesterday"}


def test_entry_callback_defaults_to_parse() -> None:
    assert entry_callback({"id": "t", "url": "u"}) == "parse"
    assert entry_callback(ENTRY) == "parse_item"


def test_a_fetched_page_carries_its_entry_and_a_compressed_body_without_location() -> None:
    page = page_message(ENTRY, 200, {"content-type": "text/html", "location": "/x"}, BODY,
                        seconds=0.123456, wire_bytes=321)
    assert page["z"] is True and zlib.decompress(page["body"]) == BODY == decompress_body(page)
    del page["body"]
    assert page == {"id": "t1", "url": "http://e.test/a", "code": 200, "depth": 2, "cb": "parse_item",
                    "data": {"k": 1}, "fetch": {"method": "GET"}, "fetch_seconds": 0.1235,
                    "headers": {"content-type": "text/html"}, "z": True, "wire_bytes": 321}


def test_a_redirect_carries_its_target_and_no_body() -> None:
    page = page_message(ENTRY, 301, {"location": "http://e.test/b"}, b"", seconds=0.01, wire_bytes=0,
                        redirect_to="http://e.test/b")
    assert page["redirect"] == "http://e.test/b"
    assert "body" not in page and "headers" not in page and "wire_bytes" not in page


def test_a_rendered_page_is_a_fetched_page_with_the_browsers_extras() -> None:
    entry: FetchEntry = {"id": "t2", "url": "http://e.test/js"}
    page = page_message(entry, 200, {"content-type": "text/html"}, b"tiny", seconds=1.5, wire_bytes=4,
                        rendered=True, final_url="http://e.test/js#/home", js_result=[1],
                        screenshot_bytes=900)
    assert page == {"id": "t2", "url": "http://e.test/js", "code": 200, "rendered": True,
                    "browser_seconds": 1.5, "headers": {"content-type": "text/html"}, "body": b"tiny",
                    "z": False, "wire_bytes": 4,
                    "final_url": "http://e.test/js#/home", "js_result": [1], "screenshot": 900}
    same_url = page_message(entry, 200, {}, b"", seconds=1, wire_bytes=0, rendered=True,
                            final_url="http://e.test/js")
    assert "final_url" not in same_url and "js_result" not in same_url and "screenshot" not in same_url


def test_a_failure_says_its_kind_and_whether_to_retry_and_keeps_its_callback() -> None:
    error = FetchError("http://e.test/a", "http", "HTTP 503 Service Unavailable", 503)
    error.retry_after_seconds = 30.0
    assert failure_message(ENTRY, error, seconds=0.5, retry=True) == {
        "id": "t1", "url": "http://e.test/a", "status": "failed", "code": 503,
        "error": "HTTP 503 Service Unavailable", "kind": "http", "fetch_seconds": 0.5, "retry": True,
        "retry_after": 30.0, "cb": "parse_item"}
    rendered = failure_message({"id": "t2", "url": "u"}, FetchError("u", "crash", "the browser crashed"),
                               seconds=2, retry=False, rendered=True)
    assert rendered == {"id": "t2", "url": "u", "status": "failed", "code": None,
                        "error": "the browser crashed", "kind": "crash", "browser_seconds": 2}


def test_a_304_is_an_outcome_that_keeps_the_items() -> None:
    assert not_modified_message(ENTRY, 0.2) == {"id": "t1", "url": "http://e.test/a", "status": "done",
                                                "code": 304, "not_modified": True, "fetch_seconds": 0.2}


def test_a_fetched_page_goes_back_to_render_as_its_entry() -> None:
    page = page_message(ENTRY, 200, {}, BODY, seconds=0.1, wire_bytes=10)
    without_validators = {k: v for k, v in ENTRY.items() if k not in ("etag", "lm")}
    assert page_entry(page) == without_validators


def test_an_outcome_carries_what_its_page_cost() -> None:
    page: Page = {"id": "t", "url": "u", "code": 200, "wire_bytes": 10, "browser_seconds": 1.0}
    assert carry_cost(page, {"id": "t", "url": "u", "status": "done"}) == {
        "id": "t", "url": "u", "status": "done", "wire_bytes": 10, "browser_seconds": 1.0}


def robots_page(url: str, body: bytes = b"User-agent: *\nDisallow: /private\n", **extra) -> Page:
    return {"id": task_id("r", url), "url": url, "code": 200, "cb": "__robots__", "headers": {},
            "body": body, "z": False, "fetch_seconds": 0.01, **extra}


def test_parse_takes_robots_txt_pages_out_as_outcomes_with_their_text() -> None:
    spider_page: Page = {"id": "p", "url": "http://a.test/", "code": 200, "body": b"", "z": False}
    redirected = robots_page("http://b.test/robots.txt", redirect="http://c.test/robots.txt")
    outcomes, rest = robots_outcomes([robots_page("http://a.test/robots.txt"), spider_page, redirected])
    assert rest == [spider_page]
    assert outcomes[0] == {"id": task_id("r", "http://a.test/robots.txt"), "url": "http://a.test/robots.txt",
                           "code": 200, "status": "done", "cb": "__robots__", "robots_code": 200,
                           "robots": "User-agent: *\nDisallow: /private\n", "fetch_seconds": 0.01}
    # a redirected robots.txt is treated as absent: everything allowed
    assert (outcomes[1]["robots_code"], outcomes[1]["final_url"]) == (404, "http://c.test/robots.txt")


def test_store_records_robots_txt_in_the_hosts_table_and_apart_from_the_spiders_pages(sqlite_url) -> None:
    crawlcluster.submit(["http://a.test/"], project="r", database_url=sqlite_url)
    engine = get_engine(sqlite_url)
    [robots] = robots_outcomes([robots_page("http://a.test/robots.txt")])[0]
    page: Outcome = {"id": task_id("r", "http://a.test/"), "url": "http://a.test/", "status": "done",
                     "code": 200}
    with engine.begin() as conn:
        recorded, rest = record_robots_outcomes(conn, "r", [page, robots], now=1000.0)
        assert rest == [page]
        assert recorded == [{"id": robots["id"], "url": "http://a.test/robots.txt", "status": "done",
                             "code": 200}]
        host = conn.execute(select(hosts.c.robots_status, hosts.c.robots_body)
                            .where(hosts.c.host == "a.test")).one()
    assert tuple(host) == ("ok", "User-agent: *\nDisallow: /private\n")


def test_a_robots_txt_row_neither_breaks_nor_extends_a_projects_failure_streak(sqlite_url) -> None:
    crawlcluster.submit(["http://a.test/"], project="r", database_url=sqlite_url)
    engine = get_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(update(projects).where(projects.c.name == "r").values(consecutive_failures=3))
    [robots] = robots_outcomes([robots_page("http://a.test/robots.txt")])[0]
    store_pages(engine, "r", [robots])
    with engine.connect() as conn:
        streak = conn.execute(select(projects.c.consecutive_failures).where(projects.c.name == "r")).scalar()
    assert streak == 3
