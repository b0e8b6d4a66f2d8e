"""Dead hosts end: a name that does not resolve, a refused port and a robots.txt that answers
500 end their hosts' rows ``failed`` after a bounded number of attempts, and a crawl of the
rough site (tests/rough_site.py) with default settings ends by itself, embedded and on a
real cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

import crawlcluster
from crawlcluster import settings
from crawlcluster.database import projects as lifecycle
from crawlcluster.database.counts import count_by_status
from crawlcluster.db import get_engine
from crawlcluster.dispatch.dispatcher import Dispatcher
from crawlcluster.netguard import AddressPolicy
from crawlcluster.schema import ROBOTS_CALLBACK, crawl_tasks, hosts
from crawlcluster.urls import url_host
from tests.outcomes import load_rows
from tests.queues import fetch_messages, free_port
from tests.rough_site import DEAD_HOST_URL, RoughSite
from tests.scripted_site import ScriptedSite, page
from workers.fetcher import Fetcher
from workers.store import store_pages

# the address guard lets these fetches reach the local test sites only (127.0.0.1, any port)
LOCAL_SITE = AddressPolicy(allow=("127.0.0.1",))

CLI = [sys.executable, "-m", "crawlcluster.cli"]


@pytest.fixture(params=["postgres", "sqlite"])
def database(request):
    if request.param == "postgres":
        return request.getfixturevalue("pg")
    return request.getfixturevalue("sqlite_url")


@pytest.fixture
def rough():
    site = RoughSite().serve()
    yield site
    site.stop()


def fetch_one(url: str):
    fetcher = Fetcher(user_agent="crawlcluster-test/1", connect_timeout_seconds=2, read_timeout_seconds=2,
                      max_body_bytes=1 << 20, concurrency=4,
                      policy=LOCAL_SITE)
    try:
        return fetcher.fetch_many([{"id": "x", "url": url}])[0]
    finally:
        fetcher.close()


def test_a_name_that_does_not_resolve_is_a_dns_error_and_a_refused_port_a_connect_error(rough):
    dead = fetch_one(DEAD_HOST_URL)
    assert dead.error is not None and dead.error.kind == "dns"
    assert "cannot resolve nosuch-host.invalid" in str(dead.error)
    refused = fetch_one(rough.refused_url)
    assert refused.error is not None and refused.error.kind == "connect"
    assert "connection refused" in str(refused.error)


def test_a_page_that_hangs_does_not_hold_back_the_pages_fetched_with_it(rough):
    fetcher = Fetcher(user_agent="crawlcluster-test/1", connect_timeout_seconds=2, read_timeout_seconds=2,
                      max_body_bytes=1 << 20, concurrency=8,
                      policy=LOCAL_SITE)
    entries = [{"id": path, "url": rough.url + path} for path in ("/hang", "/page/1", "/stall", "/page/2")]
    try:
        waves = [[(r.entry["id"], r.error.kind if r.error else r.status) for r in wave]
                 for wave in fetcher.fetch_waves(entries)]
    finally:
        fetcher.close()
    assert sorted(waves[0]) == [("/page/1", 200), ("/page/2", 200)]
    assert sorted(r for wave in waves[1:] for r in wave) == [("/hang", "timeout"), ("/stall", "timeout")]


def test_closing_the_fetcher_under_a_hanging_page_answers_the_thread_waiting_for_it(rough):
    """A worker that stops while a page hangs closes its fetcher: the task thread waiting on
    that page's batch gets an error at once instead of blocking (and the process's exit
    with it) until the page's timeout or for ever."""
    import threading

    fetcher = Fetcher(user_agent="crawlcluster-test/1", connect_timeout_seconds=2, read_timeout_seconds=60,
                      max_body_bytes=1 << 20, concurrency=4,
                      policy=LOCAL_SITE)
    outcome: dict[str, object] = {}

    def wait_for_waves() -> None:
        try:
            waves = fetcher.fetch_waves([{"id": "/page/1", "url": rough.url + "/page/1"},
                                         {"id": "/hang", "url": rough.url + "/hang"}])
            outcome["waves"] = [[(r.entry["id"], r.error.kind if r.error else r.status) for r in wave]
                                for wave in waves]
        except BaseException as exc:  # noqa: BLE001 - what the waiting thread got is the point
            outcome["error"] = exc
        outcome["ended_at"] = time.monotonic()

    waiter = threading.Thread(target=wait_for_waves, daemon=True)
    waiter.start()
    deadline = time.monotonic() + 30
    while not rough.hits("/hang") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rough.hits("/hang"), "the hanging page was never requested"
    closed_at = time.monotonic()
    fetcher.close()
    waiter.join(timeout=20)
    assert not waiter.is_alive(), "the thread waiting on the hanging page was left blocked"
    # either an error, or the hanging page's own failure: never a page that answered
    assert "error" in outcome or ("/hang", 200) not in [r for wave in outcome["waves"] for r in wave], outcome
    # a bound of the close, far below the 60 s read timeout
    assert float(outcome["ended_at"]) - closed_at < 15


def test_a_host_whose_robots_txt_stays_unreachable_ends_its_rows_after_the_set_attempts(database, test_app):
    """The scheduler and the store engine for real, with the fetch stage run by hand on each
    published message: three dead hosts (no name, a refused port, robots.txt 500) end after
    three robots.txt attempts each; the live host's rows are dispatched; the project is not
    paused by the dead hosts' failures."""
    from tasks.fetch import failure_of

    live = ScriptedSite()
    broken = ScriptedSite()
    broken.route("/robots.txt", lambda n, _h: (500, {}, b"broken"))
    live.route("/robots.txt", lambda n, _h: (404, {}, b"none"))
    live.route("/ok", lambda n, _h: page("OK"))
    refused_url = f"http://127.0.0.1:{free_port()}"
    dead_urls = [f"{DEAD_HOST_URL}{i}" for i in range(12)] + [f"{refused_url}/{i}" for i in range(3)] + \
        [f"{broken.url}/{i}" for i in range(3)]
    fetcher = Fetcher(user_agent="crawlcluster-test/1", connect_timeout_seconds=2, read_timeout_seconds=2,
                      max_body_bytes=1 << 20, concurrency=8,
                      policy=LOCAL_SITE)
    try:
        # short delays between robots.txt attempts, so the test does not wait 2 s and 10 s
        crawl = crawlcluster.submit([*dead_urls, live.url + "/ok"], project="dead",
                                    settings={"retry_delays": [0.05]}, database_url=database)
        dispatcher = Dispatcher.from_settings(
            test_app, replace(settings.current(), claim_batch_size=100, max_queued_per_project=1000,
                              queued_deadline_seconds=60, fetch_batch_size=16, tick_seconds=0.1),
            database_url=database)
        engine = get_engine(database)
        robots_fetches: Counter[str] = Counter()
        live_dispatched = False
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            dispatcher.tick()
            dispatcher.flush()
            for message in fetch_messages(test_app, timeout=0.2):
                tasks = [t for t in message["tasks"] if t.get("cb") == ROBOTS_CALLBACK]
                live_dispatched |= any(t["url"] == live.url + "/ok" for t in message["tasks"])
                for result in fetcher.fetch_many(tasks):
                    robots_fetches[result.url] += 1
                    # every robots.txt here fails (404 too): the fetch stage sends it to store
                    assert not result.ok
                    store_pages(engine, "dead", [failure_of(result)])
            with engine.connect() as conn:
                counts = count_by_status(conn, "dead")
            if counts["pending"] == 0 and live_dispatched:
                break
            time.sleep(0.05)
        dispatcher.close()
        with engine.connect() as conn:
            rows = {r.url: r
                    for r in conn.execute(crawl_tasks.select().where(crawl_tasks.c.project == "dead"))}
            host_rows = {r.host: r for r in conn.execute(hosts.select())}
            project = lifecycle.project_row(conn, "dead")
        for url in dead_urls:
            row = rows[url]
            assert (row.status, row.error_kind) == ("failed", "robots"), (url, row.status, row.error)
            assert row.error.endswith("; nothing on this host was fetched")
            assert "after 3 attempts" in row.error
        assert "robots.txt of nosuch-host.invalid unreachable after 3 attempts (dns: cannot resolve" in \
            rows[DEAD_HOST_URL + "0"].error
        assert "(connect: connection refused" in rows[refused_url + "/0"].error
        assert "(HTTP 500" in rows[broken.url + "/0"].error
        assert robots_fetches == {DEAD_HOST_URL + "robots.txt": 3, refused_url + "/robots.txt": 3,
                                  broken.url + "/robots.txt": 3, live.url + "/robots.txt": 1}
        assert len(broken.hits("/robots.txt")) == 3 and broken.hits("/0") == []  # nothing else fetched
        assert host_rows["nosuch-host.invalid"].robots_status == "unreachable"
        assert live_dispatched and rows[live.url + "/ok"].status == "queued"
        assert project["status"] == "running" and project["consecutive_failures"] == 0
        assert crawl.failure_counts()["robots"] == len(dead_urls)
    finally:
        fetcher.close()
        live.stop()
        broken.stop()


def assert_rough_outcomes(rough: RoughSite, tasks: list[dict], items: list[dict]) -> None:
    """Every row of a crawl of the rough site ended, each the way its page behaves."""
    by_url = {t["url"]: t for t in tasks}
    assert Counter(t["status"] for t in tasks if t["status"] not in ("done", "failed")) == Counter(), \
        [(t["url"], t["status"], t["error"]) for t in tasks if t["status"] not in ("done", "failed")]
    hits = rough.hit_counts()
    for path in rough.ordinary_paths():
        assert by_url[rough.url + path]["status"] in ("done", "failed"), path
    for path in ("/error/a", "/error/b"):
        row = by_url[rough.url + path]
        assert (row["status"], row["error_kind"], row["status_code"]) == ("failed", "http", 500)
        assert row["error"].startswith("HTTP 500") and hits[path] == 3  # the first try and two retries
    for path in ("/error/recovers", "/busy"):
        assert by_url[rough.url + path]["status"] == "done" and hits[path] == 2, path
    busy = rough.hits("/busy")
    assert busy[1] - busy[0] >= 1 - 0.25  # its Retry-After: 1 was obeyed
    # the pages fetched beside /hang were handed on without waiting for its timeout
    assert rough.hits("/error/recovers")[1] < rough.hits("/hang")[1]
    for path in ("/hang", "/stall"):
        row = by_url[rough.url + path]
        assert (row["status"], row["error_kind"]) == ("failed", "timeout"), (path, row["error"])
        assert hits[path] == 2  # timeouts are retried once by the quick policy
    for url, cause in ((DEAD_HOST_URL, "dns: cannot resolve"),
                       (rough.refused_url, "connect: connection refused"),
                       (rough.elsewhere_url, "HTTP 500")):
        row = by_url[url]
        assert (row["status"], row["error_kind"]) == ("failed", "robots"), (url, row["error"])
        assert f"unreachable after 3 attempts ({cause}" in row["error"]
    assert rough.hit_counts("other") == Counter({"/robots.txt": 3})  # /elsewhere never fetched
    assert {i["url"] for i in items} >= {rough.url + p for p in ("/", "/error/recovers", "/busy")}


def report_end(rough: RoughSite, ended_at: float, label: str) -> None:
    """How long after its last successful page the crawl ended (measured, not asserted)."""
    with rough.lock:
        served = [t for t, s, p in rough.log
                  if s == "main" and p not in ("/hang", "/stall", "/error/a", "/error/b")]
        first = min(t for t, s, _ in rough.log)
        hang = [t for t, s, p in rough.log if p == "/hang"]
    line = (f"{label}: ended {ended_at - max(served):.1f}s after the last successful page, "
            f"{ended_at - first:.1f}s after the first request; /hang tried at +{hang[0] - first:.1f}s and "
            f"+{hang[-1] - first:.1f}s, its first try to the end: {ended_at - hang[0]:.1f}s")
    print(line)
    with Path(os.environ.get("ROUGH_SITE_REPORT", os.devnull)).open("a", encoding="utf-8") as report:
        report.write(line + "\n")


def test_the_one_command_crawl_of_the_rough_site_ends_by_itself_with_default_settings(rough, tmp_path):
    out = tmp_path / "items.jsonl"
    frontier_db = tmp_path / "frontier.db"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CRAWLCLUSTER_") or k.endswith("KEY_PREFIX")}
    run = subprocess.run([*CLI, "crawl", *rough.start_urls(), "-o", str(out), "--db", str(frontier_db), "-q",
                          "--project", "rough"], capture_output=True, text=True, timeout=240, env=env)
    ended_at = time.monotonic()
    assert run.returncode == 0, run.stderr[-3000:]
    tasks, items = load_rows(f"sqlite:///{frontier_db}", "rough")
    assert_rough_outcomes(rough, tasks, items)
    written = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(written) == len(items)
    report_end(rough, ended_at, "embedded")


@pytest.mark.long_fault
def test_the_one_command_crawl_of_a_spider_that_raises_on_the_rough_site_ends_keeps_every_item_and_says_why(
        rough, tmp_path):
    """Issue 13's first crawl, as a user runs it: `crawlcluster crawl pkg.mod:Spider -o
    items.jsonl` with default settings on a site with 5xx pages, a hanging and a stalling
    page, a dead name, a refused port, a robots.txt that answers 500 and a callback that
    raises on some pages. It ends by itself soon after its last successful page (the quick
    policy's worst case is 30 + 2 + 30 s from a timeout's first try), writes every stored
    item, prints the failures by kind with reasons, and exits 0 because pages gave items."""
    (tmp_path / "roughrun.py").write_text(
        "from tests.rough_site import RoughSpider\n\n\n"
        "class RoughRun(RoughSpider):\n"
        f"    start_urls = {rough.start_urls()!r}\n", encoding="utf-8")
    out = tmp_path / "items.jsonl"
    frontier_db = tmp_path / "frontier.db"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CRAWLCLUSTER_") or k.endswith("KEY_PREFIX")}
    root = Path(__file__).resolve().parent.parent
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(root)])
    run = subprocess.run([*CLI, "crawl", "roughrun:RoughRun", "-o", str(out), "--db", str(frontier_db), "-q",
                          "--project", "rough"], capture_output=True, text=True, timeout=240, env=env,
                         cwd=tmp_path)
    ended_at = time.monotonic()
    assert run.returncode == 0, run.stderr[-3000:]
    tasks, items = load_rows(f"sqlite:///{frontier_db}", "rough")
    assert_rough_outcomes(rough, tasks, items)
    raised = sorted(t["url"] for t in tasks if t["error_kind"] == "callback")
    assert raised == sorted(rough.url + p for p in rough.ordinary_paths() if p.endswith("7"))
    # every item stored is in the file, once
    written = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert sorted(i["url"] for i in written) == sorted(i["url"] for i in items)
    assert len(written) == len(items) == sum(1 for t in tasks
                                             if t["status"] == "done" and t["callback"] == "parse"
                                             and t["final_url"] is None)
    # the summary names the failures by kind, with reasons
    summary = run.stderr
    assert f"callback {len(raised)}" in summary and "HTTP 500 2" in summary and "timeout 2" in summary, \
        summary
    assert "robots" in summary and "first failures:" in summary
    assert ("raised ValueError" in summary or "ends in 7" in summary
            or "HTTP 500" in summary.split("first failures:")[1])
    assert "crawlcluster failures rough" in summary
    with rough.lock:
        last_success = max(t for t, s, p in rough.log
                           if s == "main" and p not in ("/hang", "/stall", "/error/a", "/error/b"))
    # a bound of the retry policy, not of speed: the worst case by design is ~62 s
    assert ended_at - last_success < 90, ended_at - last_success
    report_end(rough, ended_at, "embedded spider")


def test_the_rough_site_through_a_cluster_finishes_and_its_spider_failures_are_callback_rows(
        rough, processes, pg):
    # /hang and /stall fail at a 10 s read timeout, not the default 20 s (the outcomes asserted
    # are the same: a timeout, retried once; the default settings run in the embedded test above)
    processes.env.update(CRAWLCLUSTER_READ_TIMEOUT_SECONDS="10", CRAWLCLUSTER_FETCH_TIMEOUT_SECONDS="15")
    processes.worker("fetch", "fetch")
    processes.worker("parse-store", "parse,store")
    processes.beat()
    crawl = crawlcluster.submit("tests.rough_site:RoughSpider", project="rough",
                                spider_kwargs={"start_urls": rough.start_urls()})
    stats = crawl.wait(timeout=240)
    ended_at = time.monotonic()
    assert stats["pending"] == stats["queued"] == 0
    tasks, items = load_rows(pg, "rough")
    assert_rough_outcomes(rough, tasks, items)
    raised = [t for t in tasks if t["error_kind"] == "callback"]
    assert sorted(t["url"] for t in raised) == sorted(
        rough.url + p for p in rough.ordinary_paths() if p.endswith("7"))
    assert all("ends in 7" in t["error"] for t in raised)
    assert crawl.stats()["status"] in ("running", "finished")  # never auto-paused by the failures
    report_end(rough, ended_at, "cluster")


def quiet_env(**values: str) -> dict[str, str]:
    """The environment of a one-command crawl: default settings but ``values``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CRAWLCLUSTER_") or k.endswith("KEY_PREFIX")}
    return {**env, **{f"CRAWLCLUSTER_{k.upper()}": v for k, v in values.items()}}


def test_retry_failed_asks_a_dead_hosts_robots_txt_again_and_fetches_its_pages(tmp_path):
    """A host whose robots.txt stayed unreachable is reset when its failed rows are re-opened:
    `crawlcluster retry --failed` fetches robots.txt again, then the page, instead of failing
    the rows again unfetched for robots_unreachable_seconds."""
    site = ScriptedSite()
    healthy = {"now": False}
    site.route("/robots.txt", lambda n, _h: (404, {}, b"none") if healthy["now"] else (500, {}, b"broken"))
    site.route("/", lambda n, _h: page("Home"))
    db = tmp_path / "frontier.db"
    env = quiet_env(robots_error_attempts="2", retry_delays="0.1")
    try:
        first = subprocess.run([*CLI, "crawl", site.url + "/", "--db", str(db), "-q", "--project", "dead"],
                               capture_output=True, text=True, check=False, timeout=60, env=env)
        crawl = crawlcluster.Crawl("dead", database_url=f"sqlite:///{db}")
        (failure,) = crawl.failures()
        assert failure["kind"] == "robots" and "unreachable after 2 attempts (HTTP 500" in failure["error"], \
            first.stderr[-2000:]
        assert len(site.hits("/robots.txt")) == 2 and site.hits("/") == []

        healthy["now"] = True
        retried = subprocess.run([*CLI, "retry", "dead", "--failed"], capture_output=True, text=True,
                                 check=False, timeout=60, env={**env, "CRAWLCLUSTER_DATABASE_URL": f"sqlite:///{db}"})
        assert "dead: 1 failed URLs pending again" in retried.stderr, retried.stderr
        with get_engine(f"sqlite:///{db}").connect() as conn:
            host = conn.execute(hosts.select().where(hosts.c.host == url_host(site.url + "/"))).one()
        assert (host.robots_status, host.robots_failures) == ("unknown", 0)
        second = subprocess.run([*CLI, "crawl", site.url + "/", "--db", str(db), "-q", "--project", "dead"],
                                capture_output=True, text=True, check=False, timeout=60, env=env)
        assert second.returncode == 0, second.stderr[-2000:]
        assert len(site.hits("/robots.txt")) == 3 and len(site.hits("/")) == 1
        assert crawl.failures() == [] and [i["url"] for i in crawl.results()] == [site.url + "/"]
    finally:
        site.stop()


def test_a_dead_hosts_rows_fail_even_when_it_is_never_held_unreachable(tmp_path):
    """CRAWLCLUSTER_ROBOTS_UNREACHABLE_SECONDS=0: the host's rows fail before its robots.txt
    is asked again, so the crawl ends instead of re-fetching robots.txt on every tick."""
    site = ScriptedSite()
    site.route("/robots.txt", lambda n, _h: (500, {}, b"broken"))
    db = tmp_path / "frontier.db"
    env = quiet_env(robots_error_attempts="2", retry_delays="0.1", robots_unreachable_seconds="0")
    try:
        try:
            run = subprocess.run([*CLI, "crawl", site.url + "/", site.url + "/other", "--db", str(db), "-q",
                                  "--project", "dead"], capture_output=True, text=True, check=False,
                                  timeout=60, env=env)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the crawl did not end; robots.txt fetched {len(site.hits('/robots.txt'))} times")
        assert "Traceback" not in run.stderr, run.stderr[-2000:]
        crawl = crawlcluster.Crawl("dead", database_url=f"sqlite:///{db}")
        assert sorted((r["url"], r["kind"]) for r in crawl.failures()) == [
            (site.url + "/", "robots"), (site.url + "/other", "robots")]
        assert site.hits("/") == site.hits("/other") == []
        assert len(site.hits("/robots.txt")) <= 3  # two attempts, at most one more asked as the rows failed
    finally:
        site.stop()
