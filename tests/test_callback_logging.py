"""A spider callback that raises is logged by the parse worker at WARNING (project, URL,
callback, traceback), bounded: one traceback per kind per window, a few lines, then a count.
The rows keep every error either way."""

from __future__ import annotations

import logging
import re

import crawlcluster
from crawlcluster import Request, Spider
from crawlcluster.http import Response
from tests.outcomes import load_rows
from workers.callback_log import CallbackErrorLog
from workers.callbacks import run_callback

PAGES = 40
OTHER_PAGES = 6


class RaisingSpider(Spider):
    """Every page of ``parse_page`` looks for a heading the demo site does not have; the
    few of ``parse_other`` read a number from a title that holds none: two kinds of failure."""

    name = "raising"
    base_url = ""

    def start(self):
        for n in range(PAGES):
            yield Request(f"{self.base_url}/page/{n}", callback="parse_page")
        for n in range(PAGES, PAGES + OTHER_PAGES):
            yield Request(f"{self.base_url}/page/{n}", callback="parse_other")

    def parse_page(self, response):
        yield {"subtitle": response.css_first("h2.subtitle").text()}

    def parse_other(self, response):
        yield {"page": int(response.title)}


def _failure(spider: Spider, callback: str, n: int):
    html = f"<html><head><title>Page {n}</title></head><body><h1>Page {n}</h1></body></html>".encode()
    response = Response(f"http://127.0.0.1/page/{n}", 200, {"content-type": "text/html"}, html, data={})
    outcome = run_callback(spider, callback, response)
    assert outcome.error and outcome.exception is not None
    return outcome


def test_the_log_holds_one_traceback_per_kind_and_window_a_few_lines_then_a_count(caplog) -> None:
    now = [1000.0]
    log = CallbackErrorLog(window_seconds=60, lines_per_window=2, clock=lambda: now[0])
    spider = RaisingSpider()
    caplog.set_level(logging.WARNING, logger="workers.callback_log")
    for n in range(6):
        outcome = _failure(spider, "parse_page", n)
        log.report("p", f"http://127.0.0.1/page/{n}", "RaisingSpider.parse_page", outcome.error,
                   outcome.exception)
    other = _failure(spider, "parse_other", 99)
    log.report("p", "http://127.0.0.1/page/99", "RaisingSpider.parse_other", other.error, other.exception)

    records = caplog.records
    assert [r.levelno for r in records] == [logging.WARNING] * 4
    assert [bool(r.exc_info) for r in records] == [True, False, False, True]
    first = records[0].getMessage()
    assert "project p, url http://127.0.0.1/page/0, callback RaisingSpider.parse_page" in first
    assert "AttributeError" in first and "test_callback_logging.py:" in first
    assert "'NoneType' object has no attribute 'text'" in caplog.text
    assert "url http://127.0.0.1/page/1," in records[1].getMessage()
    assert "ValueError" in records[3].getMessage() and "parse_other" in records[3].getMessage()

    # the window ends: the three unlogged failures are counted, the traceback comes again
    caplog.clear()
    now[0] += 61
    outcome = _failure(spider, "parse_page", 7)
    log.report("p", "http://127.0.0.1/page/7", "RaisingSpider.parse_page", outcome.error, outcome.exception)
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "project p, callback RaisingSpider.parse_page", "callback failed"]
    assert "3 more failures like the one below were not logged in the last 60s" in \
        caplog.records[0].getMessage()
    assert caplog.records[1].exc_info


def test_a_parse_worker_logs_callback_exceptions_with_project_url_callback_and_traceback(
        site, processes, pg) -> None:
    processes.env["CRAWLCLUSTER_CALLBACK_ERROR_LOG_LINES"] = "3"
    processes.env["CRAWLCLUSTER_CALLBACK_ERROR_LOG_SECONDS"] = "3600"  # one window for the whole test
    processes.env["CRAWLCLUSTER_AUTO_PAUSE_FAILURES"] = "0"  # every page fails on purpose
    processes.worker("fetch", "fetch")
    processes.worker("parse", "parse", "-c", "1")  # one process: one log state to count
    processes.worker("store", "store")
    processes.beat()
    crawl = crawlcluster.submit("tests.test_callback_logging:RaisingSpider", project="logged",
                                spider_kwargs={"base_url": site.url})
    crawl.wait(timeout=180)

    tasks, items = load_rows(pg, "logged")
    failed = [row for row in tasks if row["callback"] in ("parse_page", "parse_other")]
    assert len(failed) == PAGES + OTHER_PAGES and not items
    assert {(row["status"], row["error_kind"]) for row in failed} == {("failed", "callback")}

    log = processes.log("parse")
    warnings = [line for line in log.splitlines() if "WARNING" in line and "callback failed:" in line]
    page_lines = [line for line in warnings if "callback RaisingSpider.parse_page:" in line]
    other_lines = [line for line in warnings if "callback RaisingSpider.parse_other:" in line]
    # one traceback per kind, then three one-line warnings each; the rest only counted
    assert log.count("Traceback (most recent call last)") == 2, log[-4000:]
    assert len(page_lines) == 1 + 3 and len(other_lines) == 1 + 3, warnings
    for line in page_lines:
        assert re.search(rf"project logged, url {re.escape(site.url)}/page/\d+, callback "
                         r"RaisingSpider\.parse_page: "
                         r"RaisingSpider\.parse_page raised AttributeError", line), line
    assert "'NoneType' object has no attribute 'text'" in log
    assert "ValueError: invalid literal for int() with base 10: 'Page 4" in log
