"""The crawl console (`crawlcluster web`) in a real browser: Debian's Chromium, driven by
pyppeteer, against the console serving the SQLite file of an embedded crawl of a local site.

What is checked is what a person sees and what the table holds after they click: the
dashboard's counts equal the rows', editing rate and burst changes the project's columns,
pause and resume change its status, the failures view lists the failed URLs with their
reasons and its retry makes a group due again, a URL's page says why it waits, the results
downloads equal the CLI's export, and the guards hold (a POST without the page's token or
from another origin is refused, basic auth, a non-loopback bind without credentials).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

import crawlcluster
from crawlcluster.db import dispose_all, get_engine
from crawlcluster.devtools.js_site import wait_until
from tests.queues import free_port
from tests.scripted_site import ScriptedSite, page
from workers.browser.chromium import browser_user, start_chromium
from workers.browser.devtools_pipe import connect_over_pipe

CLI = [sys.executable, "-m", "crawlcluster.cli"]
CHROMIUM = "/usr/bin/chromium"


def flaky_site(site: ScriptedSite) -> None:
    """``/`` links to ``/ok``, ``/gone`` (404), ``/broken`` (500) and ``/other`` (200)."""
    site.route("/", lambda n, _h: page("Home", ("/ok", "/gone", "/broken", "/other")))
    site.route("/ok", lambda n, _h: page("Fine", ("/",)))
    site.route("/other", lambda n, _h: page("Other"))
    site.route("/broken", lambda n, _h: (500, {}, b"broken"))
    site.route("/gone", lambda n, _h: (404, {}, b"no such page"))
    site.route("/solo", lambda n, _h: page("Alone"))


class Console:
    """A `crawlcluster web` process on a free loopback port, stopped by its PID."""

    def __init__(self, env: dict[str, str], log: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen([*CLI, "web", "--port", str(self.port), *args], env=env,
                                         stdout=out, stderr=subprocess.STDOUT)
        ready = wait_until(self._answers, timeout=30)
        assert ready, f"the console did not start: {log.read_text()[-2000:]}"

    def _answers(self) -> bool:
        assert self.proc.poll() is None, f"the console exited: {self.log.read_text()[-2000:]}"
        try:
            return httpx.get(self.url + "/static/console.css", timeout=1).status_code in (200, 401)
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


class Browser:
    """One headless Chromium (started as the render tier starts it) and one tab, driven
    through pyppeteer from synchronous tests."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        # the render tier's own way to start it (its account, sandbox, DevTools over a pipe), with
        # no proxy: the console under test is the only site it loads
        chromium = start_chromium(CHROMIUM, proxy_url="direct://", user=browser_user(""), sandbox=True)
        self.proc, self.profile = chromium.proc, chromium.user_data_dir
        self.browser = self.run(connect_over_pipe(chromium.to_browser, chromium.from_browser))
        self.page = self.run(self.browser.newPage())
        self.run(self.page.setViewport({"width": 1280, "height": 900}))

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coroutine, 30))

    def goto(self, url: str) -> int:
        response = self.run(self.page.goto(url, waitUntil="load"))
        return response.status

    def click_and_wait(self, selector: str) -> None:
        """Click ``selector`` (a form's button) and wait for the page it leads to."""
        async def both() -> None:
            await asyncio.gather(self.page.waitForNavigation(waitUntil="load"), self.page.click(selector))
        self.run(both())

    def js(self, expression: str) -> Any:
        return self.run(self.page.evaluate(expression, force_expr=True))

    def texts(self, selector: str) -> list[str]:
        return self.run(self.page.querySelectorAllEval(selector, "els => els.map(e => e.textContent.trim())"))

    def close(self) -> None:
        try:
            self.run(self.browser.close())
        except Exception:  # noqa: BLE001 - the process is killed below either way
            pass
        pending = asyncio.all_tasks(self.loop)
        for task in pending:
            task.cancel()
        self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self.loop.close()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
        self.proc.wait(timeout=10)
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    opened = Browser()
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def crawled(browser: Browser, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """An SQLite file holding ``flaky``, crawled by `crawlcluster crawl --db` (a 200 page, two
    linked pages, a 404 and a 500), and ``solo``, submitted and never crawled (one pending
    row), served by a console."""
    site = ScriptedSite()
    flaky_site(site)
    tmp = tmp_path_factory.mktemp("console")
    db = tmp / "crawl.db"
    env = {**os.environ, "CRAWLCLUSTER_RETRIES": "0", "CRAWLCLUSTER_AUTO_PAUSE_FAILURES": "0"}
    done = subprocess.run([*CLI, "crawl", site.url + "/", "--db", str(db), "-q", "--project", "flaky",
                           "--max-depth", "1"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    database_url = f"sqlite:///{db}"
    crawlcluster.submit([site.url + "/solo"], project="solo", database_url=database_url)
    on_file = {**env, "CRAWLCLUSTER_DATABASE_URL": database_url, "CRAWLCLUSTER_BROKER_URL": "memory://"}
    console = Console(on_file, tmp / "console.log")
    yield {"site": site, "db": database_url, "env": on_file, "console": console, "browser": browser,
           "tmp": tmp}
    console.stop()
    site.stop()
    dispose_all()


def project_row(database_url: str, name: str) -> dict[str, Any]:
    from crawlcluster.database.projects import project_row as read

    with get_engine(database_url).connect() as conn:
        row = read(conn, name)
    assert row is not None
    return row


def task_of(database_url: str, project: str, path: str) -> dict[str, Any]:
    from crawlcluster.database.console import search_urls, task_row

    with get_engine(database_url).connect() as conn:
        found = [r for r in search_urls(conn, project, path, 50)[0] if r["url"].endswith(path)]
        assert len(found) == 1, found
        row = task_row(conn, found[0]["task_id"])
    assert row is not None
    return row


def dashboard_cells(browser: Browser, project: str) -> dict[str, str]:
    fields = ("status", "pending", "done", "failed", "items")
    row = f'tr[data-project="{project}"]'
    return {field: browser.texts(f'{row} [data-field="{field}"]')[0] for field in fields}


def test_dashboard_lists_each_project_with_the_counts_of_its_table(crawled):
    browser = crawled["browser"]
    assert browser.goto(crawled["console"].url + "/") == 200
    names = browser.texts("tr[data-project] .project-name")
    assert names == ["flaky", "solo"]
    for name in names:
        stats = crawlcluster.Crawl(name, database_url=crawled["db"]).stats(figures=False)
        pages = stats["pages"]
        cells = dashboard_cells(browser, name)
        # a running project whose scheduler went silent meanwhile is shown as stalled
        assert cells.pop("status") in (stats["status"], "stalled")
        assert cells == {"pending": str(pages["pending"] + pages["queued"]), "done": str(pages["done"]),
                         "failed": str(pages["failed"]), "items": str(stats["items"])}, name
    assert dashboard_cells(browser, "solo")["pending"] == "1"
    assert dashboard_cells(browser, "flaky")["failed"] == "2"  # the 404 and the 500
    # each window's bar says its counts on hover; all time's match the table
    title = browser.js("document.querySelector('tr[data-project=\"flaky\"] .bar[data-window=\"all\"]').title")
    assert "done 3" in title and "failed 2" in title
    # the strip shows every stage queue and the scheduler's lease
    assert browser.texts(".stage .stage-name") == ["fetch", "render", "parse", "store"]
    holder = crawlcluster.scheduler_health(crawled["db"])["holder"]
    assert holder and holder in browser.texts("#scheduler")[0]


def test_editing_rate_and_burst_in_the_page_changes_the_project_columns(crawled):
    browser = crawled["browser"]
    browser.goto(crawled["console"].url + "/")
    row = 'tr[data-project="solo"]'
    for field, value in (("rate", "2.5"), ("burst", "7")):
        browser.js(f"document.querySelector('{row} input[name=\"{field}\"]').value = ''")
        browser.run(browser.page.type(f'{row} input[name="{field}"]', value))
    browser.click_and_wait(f'{row} form.limits button')
    stored = project_row(crawled["db"], "solo")
    assert (stored["rate"], stored["burst"]) == (2.5, 7.0)
    assert browser.js(f"document.querySelector('{row} input[name=\"rate\"]').value") == "2.5"
    # emptied: no limit
    browser.js(f"document.querySelector('{row} input[name=\"rate\"]').value = ''")
    browser.js(f"document.querySelector('{row} input[name=\"burst\"]').value = ''")
    browser.click_and_wait(f'{row} form.limits button')
    stored = project_row(crawled["db"], "solo")
    assert (stored["rate"], stored["burst"]) == (None, None)


def test_pause_and_resume_buttons_change_the_status_and_the_page_follows_without_reloading(crawled):
    browser, db = crawled["browser"], crawled["db"]
    browser.goto(crawled["console"].url + "/")
    row = 'tr[data-project="solo"]'
    assert project_row(db, "solo")["status"] == "running"
    browser.click_and_wait(f'{row} button[data-action="pause"]')
    assert project_row(db, "solo")["status"] == "paused"
    assert dashboard_cells(browser, "solo")["status"] == "paused"
    # a change made elsewhere (the client API) reaches the open page by itself
    browser.js("window.notReloaded = true")
    crawlcluster.Crawl("solo", database_url=db).resume()
    # running (stalled, in words, once the crawl's scheduler lease is silent)
    assert wait_until(lambda: dashboard_cells(browser, "solo")["status"] in ("running", "stalled"),
                      timeout=15)
    assert browser.js("window.notReloaded === true")
    assert project_row(db, "solo")["status"] == "running"
    # run again: the finished crawl's start URL is due again and the project runs
    assert project_row(db, "flaky")["status"] == "finished"
    browser.click_and_wait('tr[data-project="flaky"] button[data-action="run-again"]')
    assert project_row(db, "flaky")["status"] == "running"
    assert task_of(db, "flaky", crawled["site"].url + "/")["status"] == "pending"
    assert task_of(db, "flaky", "/ok")["status"] == "done"  # its links stay as they are


def test_failures_view_lists_the_failed_urls_with_reasons_and_retry_makes_the_group_due_again(crawled):
    browser, db = crawled["browser"], crawled["db"]
    assert browser.goto(crawled["console"].url + "/projects/flaky") == 200
    groups = browser.texts(".failure-group h3")
    assert sorted(g.split()[0] + " " + g.split()[1] for g in groups) == ["HTTP 404", "HTTP 500"]
    broken = browser.texts('.failure-group[data-kind="HTTP 500"] td')
    assert broken[0].endswith("/broken") and "500" in broken[1]
    host = crawled["site"].url.removeprefix("http://")
    assert browser.texts("#hosts tbody td:first-child") == [host]
    before = time.time()
    browser.click_and_wait('.failure-group[data-kind="HTTP 500"] button[data-action="retry"]')
    row = task_of(db, "flaky", "/broken")
    assert row["status"] == "pending" and before - 1 <= row["next_run_at"] <= time.time()
    assert task_of(db, "flaky", "/gone")["status"] == "failed"  # another group: left as it was
    assert browser.texts(".failure-group h3") == ["HTTP 404 1"]
    # its URL page says why it waits, by the dispatcher's rules: with an hour between two
    # requests to a host, the host is in its delay (its last page was fetched a moment ago)
    crawl = crawlcluster.Crawl("flaky", database_url=db)
    crawl.configure(per_host_delay=3600)
    try:
        browser.goto(f"{crawled['console'].url}/projects/flaky/urls/{row['task_id']}")
        why = browser.texts("#why li")
        assert any(reason.startswith(f"host {host} is in its delay of 3600 s") for reason in why), why
    finally:
        crawl.configure(per_host_delay=0)
    # the search finds it, and a failed row's page shows its error
    browser.goto(crawled["console"].url + "/projects/flaky?q=gone")
    links = browser.texts("#found td.url a")
    assert len(links) == 1 and links[0].endswith("/gone")
    browser.click_and_wait("#found td.url a")
    assert "404" in browser.texts("#error")[0]
    assert browser.texts(".kind") == ["HTTP 404"]


def _download(browser: Browser, url: str) -> str:
    return browser.js(f"fetch({json.dumps(url)}).then(r => r.text())")


def test_results_browser_links_each_item_and_its_downloads_equal_the_cli_export(crawled):
    browser, console = crawled["browser"], crawled["console"]
    assert browser.goto(console.url + "/projects/flaky/results") == 200
    columns = browser.texts("#results thead th")
    assert columns[0] == "URL" and "title" in columns
    rows = browser.texts("#results tbody td.url a")
    assert len(rows) == crawlcluster.Crawl("flaky", database_url=crawled["db"]).stats(figures=False)["items"]
    href = browser.js("document.querySelector('#results tbody td.url a').href")
    assert browser.goto(href) == 200
    exports = {fmt: crawled["tmp"] / f"export.{fmt}" for fmt in ("jsonl", "json", "csv", "xml")}
    running = [subprocess.Popen([*CLI, "results", "flaky", "-o", str(out), "-q"], env=crawled["env"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for out in exports.values()]
    assert [proc.wait(timeout=60) for proc in running] == [0, 0, 0, 0]
    for fmt, out in exports.items():
        downloaded = _download(browser, f"{console.url}/projects/flaky/results.{fmt}")
        assert downloaded == out.read_bytes().decode(), fmt


def test_a_post_without_the_token_or_from_another_origin_is_refused(crawled):
    browser, console, db = crawled["browser"], crawled["console"], crawled["db"]
    browser.goto(console.url + "/")
    status = project_row(db, "flaky")["status"]
    refused = browser.js(f"fetch('{console.url}/projects/flaky/action/cancel', {{method: 'POST'}})"
                         ".then(r => r.status)")
    assert refused == 403
    token = browser.js("document.querySelector('meta[name=csrf-token]').content")
    # the right token from another origin (what a forged cross-site form would send)
    forged = httpx.post(f"{console.url}/projects/flaky/action/cancel", data={"csrf_token": token},
                        headers={"Origin": "http://evil.example"})
    assert forged.status_code == 403 and "not from this console" in forged.text
    assert project_row(db, "flaky")["status"] == status
    # pages forbid framing and foreign scripts
    answer = httpx.get(console.url + "/")
    assert answer.headers["x-frame-options"] == "DENY"
    assert "default-src 'self'" in answer.headers["content-security-policy"]
    assert "http" not in " ".join(browser.js(
        "[...document.querySelectorAll('script[src], link[href]')].map(e => e.getAttribute('src') || "
        "e.getAttribute('href'))"))


def test_a_non_loopback_bind_without_credentials_is_refused_and_basic_auth_guards_every_page(crawled):
    env = crawled["env"]
    refused = subprocess.run([*CLI, "web", "--host", "0.0.0.0", "--port", str(free_port())], env=env,
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1
    assert "refusing to serve the crawl console on 0.0.0.0 without credentials" in refused.stderr
    assert "CRAWLCLUSTER_WEB_AUTH" in refused.stderr and "Traceback" not in refused.stderr
    bad = subprocess.run([*CLI, "web", "--port", str(free_port())], capture_output=True, text=True,
                         timeout=60, env={**env, "CRAWLCLUSTER_WEB_AUTH": "admin"})
    assert bad.returncode == 1 and "user:password" in bad.stderr and "Traceback" not in bad.stderr
    secret = "s3cret-Pa55"
    guarded = Console({**env, "CRAWLCLUSTER_WEB_AUTH": f"admin:{secret},ops:other"},
                      crawled["tmp"] / "guarded.log")
    try:
        assert httpx.get(guarded.url + "/").status_code == 401
        assert httpx.get(guarded.url + "/api/dashboard", auth=("admin", "wrong")).status_code == 401
        answer = httpx.get(guarded.url + "/", auth=("admin", secret))
        assert answer.status_code == 200 and secret not in answer.text
        assert httpx.get(guarded.url + "/projects/flaky", auth=("ops", "other")).status_code == 200
        header = "Basic " + base64.b64encode(f"admin:{secret}".encode()).decode()
        assert httpx.get(guarded.url + "/", headers={"Authorization": header}).status_code == 200
    finally:
        guarded.stop()
    assert secret not in (crawled["tmp"] / "guarded.log").read_text()


def test_on_a_cluster_pause_in_the_console_stops_new_hits_and_resume_restarts_them(processes, browser):
    """Real Redis, Postgres, a worker and beat: the strip names each queue's consumer and the
    live scheduler; the pause button stops dispatch (the site sees no new request once the
    rows in flight are done) and resume restarts it."""
    site = ScriptedSite()
    pages = tuple(f"/p/{n}" for n in range(40))
    site.route("/", lambda n, _h: page("Home", pages))
    for path in pages:
        site.route(path, lambda n, _h: page("Page"))
    processes.env.update({"CRAWLCLUSTER_TICK_SECONDS": "0.1", "CRAWLCLUSTER_AUTO_PAUSE_FAILURES": "0",
                          "CRAWLCLUSTER_WORKER_LEASE_SECONDS": "4"})
    processes.worker("all", "fetch,parse,store")
    processes.beat()
    console = Console(dict(processes.env), processes.log_dir / "console.log")
    try:
        crawl = crawlcluster.submit([site.url + "/"], project="live", settings={"rate": 4, "burst": 1})
        assert wait_until(lambda: len(site.log) >= 4, timeout=30), "the cluster fetched nothing"
        browser.goto(console.url + "/")
        strip = {queue: browser.texts(f'.stage[data-queue="{queue}"] [data-field="consumers"]')[0]
                 for queue in ("fetch", "render", "parse", "store")}
        assert strip == {"fetch": "1 consumer", "render": "0 consumers", "parse": "1 consumer",
                         "store": "1 consumer"}
        assert browser.texts('#scheduler [data-field="scheduler-state"]') == ["alive"]
        browser.click_and_wait('tr[data-project="live"] button[data-action="pause"]')
        assert crawl.stats(figures=False)["status"] == "paused"
        assert wait_until(lambda: crawl.stats(figures=False)["queued"] == 0, timeout=20)
        served = len(site.log)
        assert served < 1 + len(pages) + 1, "the crawl ended before the pause: nothing left to stop"
        time.sleep(2.0)  # ten of the rate's dispatches, twenty of beat's ticks
        assert len(site.log) == served, "requests went out while the project was paused"
        browser.click_and_wait('tr[data-project="live"] button[data-action="resume"]')
        assert wait_until(lambda: len(site.log) > served, timeout=20), "resume did not restart the crawl"
        browser.click_and_wait('tr[data-project="live"] button[data-action="cancel"]')
        stats = crawl.stats(figures=False)
        assert stats["status"] == "cancelled" and stats["pending"] == 0 and stats["cancelled"] > 0
        workers_page_follows_a_worker_until_it_stops(processes, browser, console)
    finally:
        console.stop()
        site.stop()


def workers_page_follows_a_worker_until_it_stops(processes: Any, browser: Browser, console: Console) -> None:
    """The workers page lists the cluster's worker as Celery reports it (queues, concurrency,
    tasks) with its process's lease; once the worker is killed the page, refreshing by
    itself, shows it silent and its lease stopped instead of dropping them."""
    browser.goto(console.url + "/workers")
    row = 'tr[data-worker^="all@"]'
    assert browser.texts(f'{row} [data-field="queues"]') == ["fetch, parse, store"]
    assert browser.texts(f'{row} [data-field="state"]')[0] == "online"
    assert int(browser.texts(f'{row} [data-field="tasks"]')[0].replace(",", "")) > 0
    assert int(browser.texts(f'{row} [data-field="concurrency"]')[0]) >= 1
    assert "alive" in browser.texts(f"{row} [data-lease]")[0]
    shown = browser.js("document.body.dataset.refreshed || ''")
    processes.kill("all")
    silent = wait_until(lambda: browser.texts(f'{row} [data-field="state"]')[:1] == ["silent"], timeout=30)
    assert silent, browser.texts(row)
    assert browser.js("document.body.dataset.refreshed || ''") != shown, "the page was not refreshed in place"
    stopped = wait_until(lambda: "stopped" in " ".join(browser.texts(f"{row} [data-lease]")), timeout=30)
    assert stopped, browser.texts(row)
    figures = httpx.get(console.url + "/api/workers").json()
    worker = [w for w in figures["celery"] if w["name"].startswith("all@")][0]
    print(f"killed worker shown as {worker['state']}: {worker['state_text']}")


def test_the_workers_page_shows_each_render_browser_and_a_lease_that_stopped_heart_beating(crawled):
    """An embedded crawl's file: the render process's browser counters as the render stage
    records them, a live lease and one that expired (its process stopped heart-beating)."""
    from crawlcluster.database import worker_leases
    from workers.render_store import record_render_worker

    engine = get_engine(crawled["db"])
    now = time.time()
    with engine.begin() as conn:
        worker_leases.renew(conn, "box:4242", now - 5, now - 35)
        worker_leases.renew(conn, "box:4343", now + 60, now)
    counters = {"browser_pid": 77, "browsers_launched": 3, "pages_rendered": 1234, "render_failures": 5,
                "recycles": 2, "crashes": 1, "hung_kills": 0, "refused_requests": 9,
                "browser_pss_bytes": 180 * 2**20, "browser_rss_bytes": 420 * 2**20}
    record_render_worker(engine, "render@box", counters, now - 600)
    browser = crawled["browser"]
    browser.goto(crawled["console"].url + "/workers")
    row = 'tr[data-render^="render@box:"]'
    cells = {field: browser.texts(f'{row} [data-field="{field}"]')[0]
             for field in ("pages", "recycles", "crashes", "refused", "pss", "rss")}
    assert cells == {"pages": "1,234", "recycles": "2", "crashes": "1", "refused": "9", "pss": "180.0 MiB",
                     "rss": "420.0 MiB"}
    assert browser.texts('tr[data-lease="box:4242"] [data-field="state"]') == ["stopped"]
    assert browser.texts('tr[data-lease="box:4242"] [data-field="lease-text"]') == ["stopped heart-beating"]
    assert browser.texts('tr[data-lease="box:4343"] [data-field="state"]') == ["alive"]
    with engine.begin() as conn:  # the scheduler's sweep forgets the expired lease
        worker_leases.release_expired(conn, time.time())
    assert wait_until(lambda: browser.texts('tr[data-lease="box:4242"] [data-field="lease-text"]')
                      == ["stopped heart-beating; its rows were sent again"], timeout=10)


def test_only_loopback_addresses_may_be_bound_without_credentials():
    from crawlcluster.errors import ConfigurationError
    from crawlcluster.web.security import check_bind, is_loopback, parse_auth

    assert all(is_loopback(h) for h in ("127.0.0.1", "127.8.9.1", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.5", "192.168.1.2", "example.org"))
    for host in ("0.0.0.0", "::", "10.0.0.5"):
        with pytest.raises(ConfigurationError, match="CRAWLCLUSTER_WEB_AUTH"):
            check_bind(host, [])
    check_bind("0.0.0.0", parse_auth("admin:pw"))
    assert parse_auth("a:b, c:d:e") == [("a", "b"), ("c", "d:e")]
    with pytest.raises(ConfigurationError) as refused:
        parse_auth("a:secret,b:")
    assert "secret" not in str(refused.value) and "b:..." in str(refused.value)


def _figures_both_ways(database_url: str) -> dict[str, dict[str, Any]]:
    """Every project's figures read together (the dashboard's and `status`'s reads) after
    checking that they equal each project's read alone at the same instant and, for what
    does not move with the clock, ``Crawl.stats()``."""
    from crawlcluster.database.projects import all_projects
    from crawlcluster.overview import project_stats

    steady = ("pending", "queued", "done", "failed", "cancelled", "disallowed", "pages", "robots", "items",
              "next_due_at", "bytes", "fetch_seconds", "browser_seconds", "retries", "fetches", "bounds",
              "status", "pause_reason", "paused_until")
    with get_engine(database_url).connect() as conn:
        rows = all_projects(conn)
        now = time.time()
        together = project_stats(conn, rows, now)
        for row in rows:
            assert together[row["name"]] == project_stats(conn, [row], now)[row["name"]]
    for row in rows:
        alone = crawlcluster.Crawl(row["name"], database_url=database_url).stats()
        assert {key: together[row["name"]][key] for key in steady} == {key: alone[key] for key in steady}
        assert together[row["name"]]["windows"]["all"] == alone["windows"]["all"]
    return together


def test_every_projects_figures_read_at_once_equal_each_projects_stats_on_sqlite_and_postgres(crawled, pg):
    """The real crawl's file (``flaky``, ``solo``), and the same rows copied into Postgres
    (where the samples are LATERAL reads over every project): the figures the dashboard and
    `crawlcluster status` read for all projects at once equal each project's own."""
    from sqlalchemy import select

    from crawlcluster.schema import metadata

    on_file = _figures_both_ways(crawled["db"])
    # (the tests before this one retried the failures: the states moved, the figures did not)
    assert on_file["flaky"]["pages"]["done"] >= 2 and on_file["flaky"]["fetches"] >= 5
    assert on_file["flaky"]["windows"]["all"]["done"] >= 2 and on_file["solo"]["pending"] == 1
    # the triggers fill these
    counted = ("task_counts", "host_task_counts", "task_counts_delta", "project_stat_totals",
               "project_stat_deltas")
    with get_engine(crawled["db"]).connect() as source, get_engine(pg).begin() as target:
        for table in metadata.sorted_tables:
            rows = [dict(row._mapping) for row in source.execute(select(table))]
            if rows and table.name not in counted:
                target.execute(table.insert(), rows)
    on_postgres = _figures_both_ways(pg)
    for name in ("flaky", "solo"):
        for key in ("pages", "robots", "items", "next_due_at", "bytes", "retries", "fetches", "status"):
            assert on_postgres[name][key] == on_file[name][key], (name, key)
        assert on_postgres[name]["windows"]["all"] == on_file[name]["windows"]["all"]
