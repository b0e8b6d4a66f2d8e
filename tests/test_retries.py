"""Retries with back-off, Retry-After, final failures, re-crawl by itag and age, the 304
path and auto_recrawl, on real Redis, Postgres and worker processes; which retry policy a
row gets, and what the store engine does with a capped Retry-After and a timeout, on
Postgres and SQLite."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import crawlcluster
from crawlcluster import scheduling, settings
from crawlcluster.database import claims
from crawlcluster.database import projects as lifecycle
from crawlcluster.db import get_engine
from crawlcluster.errors import ConfigurationError
from crawlcluster.spider import Request, Spider
from crawlcluster.urls import task_id
from tests.outcomes import load_rows
from tests.scripted_site import ScriptedSite, page
from workers.store import store_pages

TOLERANCE_SECONDS = 0.25


@pytest.fixture
def scripted():
    site = ScriptedSite()
    yield site
    site.stop()


@pytest.fixture
def cluster(processes):
    processes.env.update({"CRAWLCLUSTER_RETRY_DELAYS": "1,2", "CRAWLCLUSTER_TICK_SECONDS": "0.1"})
    processes.worker("all", "fetch,parse,store")
    processes.beat()
    return processes


def row_of(pg: str, project: str, url: str) -> dict:
    tasks, _ = load_rows(pg, project)
    return next(r for r in tasks if r["url"] == url)


def gaps(hits) -> list[float]:
    times = [t for t, _ in hits]
    return [b - a for a, b in zip(times, times[1:])]


def test_503_is_retried_after_each_backoff_delay_then_succeeds(cluster, scripted, pg):
    scripted.route("/flaky", lambda n, _h: (503, {}, b"busy") if n <= 2 else page("Recovered"))
    crawl = crawlcluster.submit([scripted.url + "/flaky"], project="flaky")
    crawl.wait(timeout=60)
    hits = scripted.hits("/flaky")
    assert len(hits) == 3
    first, second = gaps(hits)
    assert first >= 1 - TOLERANCE_SECONDS and second >= 2 - TOLERANCE_SECONDS, (first, second)
    row = row_of(pg, "flaky", scripted.url + "/flaky")
    assert (row["status"], row["status_code"], row["retries_left"]) == ("done", 200, 0)  # 2 retries: quick
    assert [item["title"] for item in crawl.results()] == ["Recovered"]


def test_retries_run_out_and_the_row_fails_with_its_status_code_and_error(cluster, scripted, pg):
    scripted.route("/down", lambda n, _h: (503, {}, b"down"))
    crawl = crawlcluster.submit([scripted.url + "/down"], project="down", settings={"retries": 2})
    stats = crawl.wait(timeout=60)
    assert len(scripted.hits("/down")) == 3  # the first try and two retries
    row = row_of(pg, "down", scripted.url + "/down")
    assert (row["status"], row["status_code"], row["retries_left"]) == ("failed", 503, 0)
    assert "HTTP 503" in row["error"]
    assert stats["failed"] == 1 and stats["items"] == 0


def test_429_retry_after_is_honoured_over_the_backoff_schedule(cluster, scripted, pg):
    scripted.route("/busy",
                   lambda n, _h: (429, {"Retry-After": "3"}, b"slow down") if n == 1 else page("Served"))
    crawl = crawlcluster.submit([scripted.url + "/busy"], project="busy")
    crawl.wait(timeout=60)
    hits = scripted.hits("/busy")
    assert len(hits) == 2
    assert gaps(hits)[0] >= 3 - TOLERANCE_SECONDS
    assert row_of(pg, "busy", scripted.url + "/busy")["status"] == "done"


def test_404_is_final_at_once(cluster, scripted, pg):
    crawl = crawlcluster.submit([scripted.url + "/gone"], project="gone")
    crawl.wait(timeout=60)
    assert len(scripted.hits("/gone")) == 1
    row = row_of(pg, "gone", scripted.url + "/gone")
    assert (row["status"], row["status_code"]) == ("failed", 404)


def test_a_changed_itag_makes_a_known_url_due_again_and_the_same_itag_does_not(cluster, scripted, pg):
    scripted.route("/item", lambda n, _h: page(f"Item v{n}"))
    kwargs = {"base_url": scripted.url, "paths": ["/item"], "itag": "v1"}
    crawl = crawlcluster.submit("tests.spiders:ItemSpider", project="itag", spider_kwargs=kwargs)
    crawl.wait(timeout=60)
    crawlcluster.submit("tests.spiders:ItemSpider", project="itag", spider_kwargs=kwargs).wait(timeout=60)
    assert len(scripted.hits("/item")) == 1
    crawlcluster.submit("tests.spiders:ItemSpider", project="itag",
                        spider_kwargs={**kwargs, "itag": "v2"}).wait(timeout=60)
    assert len(scripted.hits("/item")) == 2
    assert [item["title"] for item in crawl.results()] == ["Item v2"]
    assert row_of(pg, "itag", scripted.url + "/item")["itag"] == "v2"


def test_an_expired_age_refetches_with_the_stored_etag_and_a_304_keeps_the_items(cluster, scripted, pg):
    def item(n, headers):
        if headers.get("if-none-match") == '"abc"':
            return 304, {"ETag": '"abc"'}, b""
        return page("Tagged",
                    extra_headers={"ETag": '"abc"', "Last-Modified": "Mon, 23 Nov 2026 10:00:00 GMT"})

    scripted.route("/tagged", item)
    kwargs = {"base_url": scripted.url, "paths": ["/tagged"], "request_age": 1}
    crawl = crawlcluster.submit("tests.spiders:ItemSpider", project="age", spider_kwargs=kwargs)
    crawl.wait(timeout=60)
    crawlcluster.submit("tests.spiders:ItemSpider", project="age", spider_kwargs=kwargs).wait(timeout=60)
    assert len(scripted.hits("/tagged")) == 1  # age not yet passed
    time.sleep(1.2)
    crawlcluster.submit("tests.spiders:ItemSpider", project="age", spider_kwargs=kwargs).wait(timeout=60)
    hits = scripted.hits("/tagged")
    assert len(hits) == 2
    assert hits[1][1].get("if-none-match") == '"abc"'
    assert hits[1][1].get("if-modified-since") == "Mon, 23 Nov 2026 10:00:00 GMT"
    row = row_of(pg, "age", scripted.url + "/tagged")
    assert (row["status"], row["status_code"], row["etag"]) == ("done", 304, '"abc"')
    assert [item["title"] for item in crawl.results()] == ["Tagged"]


def test_force_update_refetches_a_known_url_at_once(cluster, scripted, pg):
    scripted.route("/forced", lambda n, _h: page(f"Forced {n}"))
    kwargs = {"base_url": scripted.url, "paths": ["/forced"]}
    crawlcluster.submit("tests.spiders:ItemSpider", project="force", spider_kwargs=kwargs).wait(timeout=60)
    crawlcluster.submit("tests.spiders:ItemSpider", project="force",
                        spider_kwargs={**kwargs, "force": True}).wait(timeout=60)
    assert len(scripted.hits("/forced")) == 2


def test_auto_recrawl_keeps_fetching_every_age_until_cancelled(cluster, scripted, pg):
    scripted.route("/tick", lambda n, _h: page(f"Tick {n}"))
    crawl = crawlcluster.submit("tests.spiders:RecrawlSpider", project="ticks",
                                spider_kwargs={"base_url": scripted.url})
    deadline = time.monotonic() + 30
    while len(scripted.hits("/tick")) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    hits = scripted.hits("/tick")
    assert len(hits) >= 3
    assert all(gap >= 1 - TOLERANCE_SECONDS for gap in gaps(hits))
    assert crawl.stats()["status"] == "running"  # never finished while it re-crawls
    crawl.cancel()
    time.sleep(2.5)
    count = len(scripted.hits("/tick"))
    time.sleep(2)
    assert len(scripted.hits("/tick")) == count


# -- which policy a row gets -------------------------------------------------------------

class RecurringSpider(Spider):
    retry_policy = "recurring"


def test_the_default_policy_is_quick_and_a_project_may_name_the_recurring_one():
    quick = scheduling.resolve(Request("http://h/"), None, None, None)
    assert (quick.retry_policy, quick.retries, quick.retry_delays) == ("quick", 2, [2.0, 10.0])
    assert quick.row_values()["_fetch_extra"] == {}  # the cluster default travels in no row
    recurring = scheduling.resolve(Request("http://h/"), None, None, {"retry_policy": "recurring"})
    assert (recurring.retry_policy, recurring.retries) == ("recurring", 3)
    assert recurring.retry_delays == [30.0, 3600.0, 21600.0, 43200.0, 86400.0]
    assert recurring.row_values()["_fetch_extra"]["retry_policy"] == "recurring"


def test_explicit_retries_win_over_a_policy_named_at_the_same_or_a_less_specific_place():
    # the spider names recurring; the request's own retries win, its delays come from the spider's policy
    schedule = scheduling.resolve(Request("http://h/", retries=5), None, RecurringSpider(), None)
    assert (schedule.retry_policy, schedule.retries, schedule.retry_delays[0]) == ("recurring", 5, 30.0)
    # a project's explicit delays beside its policy win over that policy's delays
    schedule = scheduling.resolve(Request("http://h/"), None, None,
                                  {"retry_policy": "recurring", "retry_delays": [1]})
    assert (schedule.retries, schedule.retry_delays) == (3, [1.0])
    # the project's retries (this run's --retries) win over the spider's policy; its delays stay
    schedule = scheduling.resolve(Request("http://h/"), None, RecurringSpider(), {"retries": 9})
    assert (schedule.retry_policy, schedule.retries, schedule.retry_delays[0]) == ("recurring", 9, 30.0)


def test_the_projects_retry_options_win_over_the_spiders_as_scrapys_command_line_does():
    class FiveRetries(Spider):
        retries = 5
        retry_delays = (7.0,)

    # the run's settings over the spider's attributes and its named policy
    schedule = scheduling.resolve(Request("http://h/"), None, FiveRetries(),
                                  {"retries": 0, "retry_delays": [1]})
    assert (schedule.retries, schedule.retry_delays) == (0, [1.0])
    schedule = scheduling.resolve(Request("http://h/"), None, RecurringSpider(), {"retry_policy": "quick"})
    assert (schedule.retry_policy, schedule.retries, schedule.retry_delays) == ("quick", 2, [2.0, 10.0])
    # ... but not over a request's own value or a callback's @config (Scrapy's max_retry_times)
    assert scheduling.resolve(Request("http://h/", retries=4), None, FiveRetries(),
                              {"retries": 0}).retries == 4
    configured = scheduling.config(retries=6)(lambda self, response: None)
    assert scheduling.resolve(Request("http://h/"), configured, FiveRetries(), {"retries": 0}).retries == 6
    # other options keep their order: the spider's priority over the project's
    class Urgent(Spider):
        priority = 3
    assert scheduling.resolve(Request("http://h/"), None, Urgent(), {"priority": 1}).priority == 3


def test_crawl_retries_and_retry_delay_win_over_a_spider_naming_the_recurring_policy(tmp_path):
    """`crawlcluster crawl mod:Spider --retries 1 --retry-delay 0.2` on a spider whose
    retry_policy is recurring: the page answering 500 is tried twice, 0.2 s apart, and the
    crawl ends, instead of waiting 30 s and an hour for the recurring policy's retries."""
    site = ScriptedSite()
    site.route("/robots.txt", lambda n, _h: (404, {}, b"none"))
    site.route("/", lambda n, _h: (500, {}, b"broken"))
    (tmp_path / "recurringrun.py").write_text(
        "from crawlcluster import Spider\n\n\n"
        "class RecurringRun(Spider):\n"
        "    retry_policy = 'recurring'\n"
        f"    start_urls = [{site.url + '/'!r}]\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CRAWLCLUSTER_") or k.endswith("KEY_PREFIX")}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(Path(__file__).resolve().parent.parent)])
    db = tmp_path / "frontier.db"
    try:
        try:
            run = subprocess.run([sys.executable, "-m", "crawlcluster.cli", "crawl",
                                  "recurringrun:RecurringRun", "--retries", "1", "--retry-delay", "0.2",
                                  "--db", str(db), "-q", "--project", "rr"],
                                 capture_output=True, text=True, check=False, timeout=60, env=env,
                                 cwd=tmp_path)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the crawl waited on the spider's recurring policy: "
                        f"{len(site.hits('/'))} tries so far")
        assert "Traceback" not in run.stderr, run.stderr[-2000:]
        assert len(site.hits("/")) == 2 and gaps(site.hits("/"))[0] >= 0.2 - 0.05
        (failure,) = crawlcluster.Crawl("rr", database_url=f"sqlite:///{db}").failures()
        assert failure["kind"] == "HTTP 500" and "(retry" not in failure["error"]
    finally:
        site.stop()


def test_cluster_settings_set_retries_for_every_policy_and_choose_the_default_one(monkeypatch):
    monkeypatch.setenv("CRAWLCLUSTER_RETRY_POLICY", "recurring")
    settings.reset()  # the process reads its settings once
    assert scheduling.resolve(Request("http://h/"), None, None, None).retries == 3
    monkeypatch.setenv("CRAWLCLUSTER_RETRIES", "1")
    monkeypatch.setenv("CRAWLCLUSTER_RETRY_DELAYS", "4")
    settings.reset()
    schedule = scheduling.resolve(Request("http://h/"), None, None, {"retry_policy": "quick"})
    assert (schedule.retry_policy, schedule.retries, schedule.retry_delays) == ("quick", 2, [2.0, 10.0])
    schedule = scheduling.resolve(Request("http://h/"), None, None, None)
    assert (schedule.retry_policy, schedule.retries, schedule.retry_delays) == ("recurring", 1, [4.0])


def test_the_cluster_retry_settings_can_be_handed_in_and_rows_carry_only_what_differs():
    cluster = scheduling.ClusterRetries(policy="recurring", retries=1, retry_delays=(4.0,),
                                        retry_after_max_seconds=5.0)
    schedule = scheduling.resolve(Request("http://h/"), None, None, None, cluster)
    assert (schedule.retry_policy, schedule.retries, schedule.retry_delays) == ("recurring", 1, [4.0])
    assert schedule.row_values()["_fetch_extra"] == {}
    quick = scheduling.resolve(Request("http://h/"), None, None, {"retry_policy": "quick"}, cluster)
    assert quick.row_values()["_fetch_extra"] == {"retries": 2, "retry_delays": [2.0, 10.0],
                                                  "retry_policy": "quick"}
    rules = scheduling.RetryRules.of_row(None, cluster)
    assert (rules.policy.name, rules.retries, rules.retry_delays) == ("recurring", 1, [4.0])
    assert (rules.retry_after_max_seconds, rules.timeout_retries) == (5.0, 3)
    loaded = settings.Settings.load({"CRAWLCLUSTER_RETRY_DELAYS": "1,2", "CRAWLCLUSTER_TIMEOUT_RETRIES": "0"})
    assert scheduling.ClusterRetries.from_settings(loaded) == scheduling.ClusterRetries(
        policy="quick", retry_delays=(1.0, 2.0), timeout_retries=0)


def test_auto_recrawl_rows_get_the_recurring_policy_unless_they_name_one():
    recrawled = scheduling.resolve(Request("http://h/", age=60, auto_recrawl=True), None, None, None)
    assert (recrawled.retry_policy, recrawled.retries) == ("recurring", 3)
    named = scheduling.resolve(Request("http://h/", age=60, auto_recrawl=True, retry_policy="quick"),
                               None, None, None)
    assert (named.retry_policy, named.retries) == ("quick", 2)
    once = scheduling.resolve(Request("http://h/", age=60), None, None, None)  # re-crawl when seen again only
    assert once.retry_policy == "quick"


def test_project_settings_take_a_retry_policy_and_refuse_an_unknown_one_with_a_sentence():
    assert scheduling.check_project_settings({"retry_policy": " Recurring"}) == {"retry_policy": "recurring"}
    with pytest.raises(ConfigurationError, match="unknown retry policy 'never'; known: quick, recurring"):
        scheduling.check_project_settings({"retry_policy": "never"})
    with pytest.raises(ConfigurationError, match="retry_delays"):
        scheduling.check_project_settings({"retry_delays": "soon"})


# -- what the store engine does with a failure, on Postgres and SQLite ---------------------

@pytest.fixture(params=["postgres", "sqlite"])
def database(request):
    if request.param == "postgres":
        return request.getfixturevalue("pg")
    return request.getfixturevalue("sqlite_url")


def claim_all(engine, project: str, now: float) -> None:
    with engine.begin() as conn:
        claims.claim_due_tasks(conn, project, 100, 60, now=now)


def test_a_retry_after_beyond_its_cap_waits_the_cap_and_says_so(database):
    url = "http://busy.example/"
    crawlcluster.submit([url], project="capped", database_url=database)
    engine = get_engine(database)
    claim_all(engine, "capped", time.time())
    before = time.time()
    failure = {"id": task_id("capped", url), "url": url, "status": "failed", "code": 503, "kind": "http",
               "error": "HTTP 503 Service Unavailable", "retry": True, "retry_after": 7200.0}
    assert store_pages(engine, "capped", [failure])["retried"] == 1
    row = row_of(database, "capped", url)
    assert row["status"] == "pending" and before + 60 <= row["next_run_at"] <= time.time() + 60
    assert row["error"] == ("HTTP 503 Service Unavailable (retry 1 of 2 in 60s; Retry-After 7200 s capped to "
                            "60 s (retry_after_max_seconds))")


def test_a_timeout_is_retried_once_by_the_quick_policy_then_fails_saying_why(database):
    url = "http://slow.example/"
    crawlcluster.submit([url], project="slow", database_url=database)
    engine = get_engine(database)
    failure = {"id": task_id("slow", url), "url": url, "status": "failed", "code": None, "kind": "timeout",
               "error": f"timeout while reading {url}", "retry": True}
    claim_all(engine, "slow", time.time())
    assert store_pages(engine, "slow", [dict(failure)])["retried"] == 1
    row = row_of(database, "slow", url)
    assert row["status"] == "pending" and "(retry 1 of 2 in 2s)" in row["error"]
    claim_all(engine, "slow", time.time() + 3)
    assert store_pages(engine, "slow", [dict(failure)]) == {"done": 0, "failed": 1, "retried": 0, "items": 0}
    row = row_of(database, "slow", url)
    assert (row["status"], row["error_kind"], row["retries_left"]) == ("failed", "timeout", 1)
    assert row["error"] == f"timeout while reading {url} (after 2 tries that timed out; timeout_retries=1)"


def test_timeouts_are_counted_apart_from_other_retries(database):
    """A page that answered 500 once and then timed out has had one timeout: the quick
    policy's one timeout retry is still its own, and the error counts only timeouts."""
    url = "http://flaky-then-slow.example/"
    crawlcluster.submit([url], project="mixed", settings={"retries": 3}, database_url=database)
    engine = get_engine(database)
    server_error = {"id": task_id("mixed", url), "url": url, "status": "failed", "code": 500, "kind": "http",
                    "error": "HTTP 500 Internal Server Error", "retry": True}
    timeout = {"id": task_id("mixed", url), "url": url, "status": "failed", "code": None, "kind": "timeout",
               "error": f"timeout while reading {url}", "retry": True}
    claim_all(engine, "mixed", time.time())
    assert store_pages(engine, "mixed", [dict(server_error)])["retried"] == 1
    claim_all(engine, "mixed", time.time() + 3)
    assert store_pages(engine, "mixed", [dict(timeout)])["retried"] == 1
    row = row_of(database, "mixed", url)
    assert (row["status"], row["timeouts"]) == ("pending", 1) and "(retry 2 of 3 in 10s)" in row["error"]
    claim_all(engine, "mixed", time.time() + 13)
    assert store_pages(engine, "mixed", [dict(timeout)])["failed"] == 1
    row = row_of(database, "mixed", url)
    assert (row["status"], row["error_kind"], row["retries_left"]) == ("failed", "timeout", 1)
    assert row["error"] == f"timeout while reading {url} (after 2 tries that timed out; timeout_retries=1)"
    # fetched fine after a retry of its failure, the row starts counting afresh
    assert crawlcluster.Crawl("mixed", database_url=database).retry_failed() == 1
    assert row_of(database, "mixed", url)["timeouts"] == 0


# -- what counts toward an auto-pause --------------------------------------------------------

def test_only_failures_that_say_the_site_is_in_trouble_count_toward_an_auto_pause(database):
    """Dead links (404), callbacks that raise, redirect loops, oversized bodies and names that
    do not resolve end one page or one host: a listing page full of them must not pause
    the crawl. 5xx, 429, timeouts and failed connections do count."""
    urls = [f"http://site.example/{i}" for i in range(40)]
    crawlcluster.submit(urls, project="streak", settings={"retries": 0}, database_url=database)
    engine = get_engine(database)
    claim_all(engine, "streak", time.time())

    def failed(url: str, kind: str, code: int | None = None) -> dict:
        return {"id": task_id("streak", url), "url": url, "status": "failed", "code": code, "kind": kind,
                "error": f"{kind} {code or ''}"}

    page_faults = [failed(urls[0], "http", 404), failed(urls[1], "http", 410),
                   failed(urls[2], "callback", 200), failed(urls[3], "redirect"),
                   failed(urls[4], "body_too_large", 200), failed(urls[5], "dns"),
                   failed(urls[6], "decode", 200)] + [failed(u, "http", 404) for u in urls[7:20]]
    assert store_pages(engine, "streak", page_faults)["failed"] == 20
    with engine.connect() as conn:
        project = lifecycle.project_row(conn, "streak")
    assert (project["status"], project["consecutive_failures"]) == ("running", 0)

    troubles = [failed(urls[20], "http", 500), failed(urls[21], "http", 503), failed(urls[22], "http", 429),
                failed(urls[23], "timeout"), failed(urls[24], "connect"), failed(urls[25], "network")]
    troubles += [failed(u, "http", 502) for u in urls[26:30]]
    store_pages(engine, "streak", troubles)
    with engine.connect() as conn:
        project = lifecycle.project_row(conn, "streak")
    assert (project["status"], project["consecutive_failures"]) == ("paused", 10)
    assert project["pause_reason"].startswith("10 consecutive failures")
