"""The browser tier in cluster mode for real: `celery -A crawlcluster worker -Q render` (and
fetch, parse, store workers and beat) as subprocesses on the test Redis and Postgres, real
Chromium, and a local site whose links exist only after JavaScript runs. Outcomes are
checked against the site's hit log (who asked for what: the browser or httpx), the rows
in Postgres and the processes in /proc."""

from __future__ import annotations

import json
import os
import re
import signal
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import pytest

import crawlcluster
from crawlcluster.devtools.js_site import JsSite, LateScriptSite, MixedSite, wait_until
from tests.outcomes import load_rows
from workers.autorender import sampled
from workers.browser.chromium import BROWSER_OWNER_ENV
from workers.browser.proctree import _parent_of, descendants, pids_with_environ

WORKER_ARGS = ("-l", "info", "--without-mingle", "--without-gossip")


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def host_of(site: JsSite) -> str:
    return urlsplit(site.url).netloc


def start(processes, **workers: str) -> None:
    """Start workers named ``name=queues`` side by side, then beat; wait until all are ready."""
    processes.env["CRAWLCLUSTER_RENDER_PAGE_TIMEOUT_SECONDS"] = "10"
    for name, queues in workers.items():
        processes.start(name, "worker", "-Q", queues, "-n", f"{name}@%h", *WORKER_ARGS)
    for name in workers:
        processes.wait_for_log(name, "ready.", timeout=60)
    processes.beat()


def received_tasks(processes, name: str) -> Counter:
    return Counter(re.findall(r"Task (crawlcluster\.\w+)\[[^\]]+\] received", processes.log(name)))


def browsers_of(pids: list[int]) -> list[int]:
    """Live processes of browsers started by any of ``pids`` (found by the environment
    variable every browser process inherits, so re-parented helpers count too)."""
    found = []
    for pid in pids:
        found += pids_with_environ(f"{BROWSER_OWNER_ENV}={pid}".encode())
    return found


def command_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def main_browser(processes, name: str) -> int | None:
    for pid in browsers_of(processes.pids(name)):
        if _parent_of(pid) in processes.pids(name):
            return pid
    return None


def page_rows(pg: str, project: str) -> dict[str, dict]:
    tasks, _items = load_rows(pg, project)
    return {path_of(row["url"]): row for row in tasks if path_of(row["url"]) != "/robots.txt"}


@pytest.fixture
def js_site():
    site = JsSite(pages=14)
    yield site
    site.stop()


def test_render_crawl_finds_every_js_only_page_exactly_once_and_render_worker_gets_only_render_tasks(
        js_site, processes, pg):
    start(processes, render="render", fetch="fetch", parse="parse", store="store")
    crawl = crawlcluster.submit("tests.render_spiders:TreeSpider", project="jstree", spider_kwargs={
        "render": True, "start_urls": [js_site.url + "/"], "allowed_domains": [host_of(js_site)]})
    stats = crawl.wait(timeout=120)
    assert stats["pending"] == stats["queued"] == 0

    rows = page_rows(pg, "jstree")
    assert set(rows) == js_site.page_paths()  # every page, found only through JS-written links
    assert {(r["status"], r["status_code"]) for r in rows.values()} == {("done", 200)}
    browser_hits = js_site.hits("browser")
    assert {p: browser_hits[p] for p in js_site.page_paths()} == dict.fromkeys(js_site.page_paths(), 1)
    assert not set(js_site.hits("http")) & js_site.page_paths()  # httpx never asked for a page

    items = {path_of(i["url"]): i for i in crawl.results()}
    assert set(items) == js_site.page_paths()
    assert items["/page/7"]["h1"] == "Page 7" and items["/page/7"]["rendered"] is True

    assert set(received_tasks(processes, "render")) == {"crawlcluster.render"}
    assert "crawlcluster.render" not in received_tasks(processes, "fetch")
    [worker] = crawlcluster.render_stats()
    assert worker["pages_rendered"] == len(js_site.page_paths())
    assert worker["browsers_launched"] == 1 and worker["crashes"] == worker["recycles"] == 0


def test_auto_render_renders_only_pages_that_need_it_remembers_the_host_and_fetch_workers_start_no_browser(
        js_site, processes, pg):
    static = JsSite(pages=6, static=True)
    try:
        start(processes, render="render", fetch="fetch", parse="parse", store="store")
        crawl = crawlcluster.submit("tests.render_spiders:TreeSpider", project="auto", spider_kwargs={
            "render": "auto", "start_urls": [js_site.url + "/", static.url + "/"],
            "allowed_domains": [host_of(js_site), host_of(static)]})
        stats = crawl.wait(timeout=120)
        assert stats["pending"] == stats["queued"] == 0

        # the static site is fetched once per page; the pages of a shape still being learned
        # (render_auto_agreements of them) are rendered too, to compare, at most once each
        assert {p: static.hits("http")[p] for p in static.page_paths()} == \
            dict.fromkeys(static.page_paths(), 1)
        assert max(static.hits("browser")[p] for p in static.page_paths()) <= 1
        # every JS page is rendered once; httpx fetched the pages found before their URL shape
        # was known to need a browser (the index and its two links), once each, and the rest
        # went straight to render, but for rows the scheduler sent in the moments before its
        # memory of the decision refreshed (RenderHostMemory): the parse stage sent those on
        # to render, and each was fetched plainly once at most
        assert {p: js_site.hits("browser")[p] for p in js_site.page_paths()} == \
            dict.fromkeys(js_site.page_paths(), 1)
        plain = {p: n for p, n in js_site.hits("http").items() if p in js_site.page_paths()}
        assert {"/": 1, "/page/1": 1, "/page/2": 1}.items() <= plain.items()
        assert set(plain.values()) == {1}, plain
        assert crawl.render_hosts() == [host_of(js_site)]

        items = {(urlsplit(i["url"]).netloc, path_of(i["url"])): i for i in crawl.results()}
        assert len(items) == len(js_site.page_paths()) + len(static.page_paths())
        assert all(i["rendered"] for (host, _), i in items.items() if host == host_of(js_site))
        assert items[(host_of(js_site), "/page/5")]["h1"] == "Page 5"

        # the fetch, parse and store workers did their share without a browser
        assert received_tasks(processes, "fetch")["crawlcluster.fetch"] > 0
        for name in ("fetch", "parse", "store"):
            pids = processes.pids(name)
            assert browsers_of(pids) == []
            children = {p for pid in pids for p in descendants(pid)}
            assert not [p for p in children if command_of(p).startswith("chrom")], f"{name} started Chromium"
        assert main_browser(processes, "render") is not None
    finally:
        static.stop()


def test_wait_for_js_script_screenshot_and_client_redirect_reach_callbacks_and_results(
        js_site, processes, pg, tmp_path: Path):
    start(processes, render="render", fetch="fetch", parse="parse", store="store")
    paths = ["/delayed", "/delayed?wait=2500", "/delayed?wait=0", "/page/1", "/redirect"]
    crawl = crawlcluster.submit("tests.render_spiders:OptionsSpider", project="options",
                                spider_kwargs={"base_url": js_site.url, "paths": paths})
    crawl.wait(timeout=120)
    rows = page_rows(pg, "options")
    assert {path: r["status"] for path, r in rows.items()} == dict.fromkeys(rows, "done")
    assert path_of(rows["/redirect"]["final_url"]) == "/landing"  # the row keeps its own URL

    _tasks, stored = load_rows(pg, "options")
    by_row = {path_of(r["url"]): r["item"] for r in stored}
    assert by_row["/delayed"]["late"] == "arrived late" and by_row["/delayed"]["js_result"] == 1
    assert by_row["/delayed?wait=2500"]["late"] == "arrived late"  # waited 2500 ms
    assert by_row["/delayed?wait=0"]["late"] is None
    assert by_row["/page/1"]["js_result"] == "page 1|/page/1"
    assert path_of(by_row["/redirect"]["url"]) == "/landing"  # response.url is the final URL

    assert crawl.export_screenshots(str(tmp_path / "shots")) == 1
    [index_line] = (tmp_path / "shots" / "index.jsonl").read_text().splitlines()
    assert path_of(json.loads(index_line)["url"]) == "/delayed"
    [png] = list((tmp_path / "shots").glob("*.png"))
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_page_that_never_loads_ends_as_timeout_and_the_render_worker_goes_on(js_site, processes, pg):
    start(processes, render="render", fetch="fetch", parse="parse", store="store")
    crawl = crawlcluster.submit("tests.render_spiders:OptionsSpider", project="hang", spider_kwargs={
        "base_url": js_site.url, "paths": ["/hang", "/page/1"], "hang_seconds": 2})
    crawl.wait(timeout=120)
    rows = page_rows(pg, "hang")
    assert rows["/hang"]["status"] == "failed"
    # the 2 s run out while the page loads (or, on a loaded machine, while Chromium opens it)
    hang = f"render timeout: {js_site.url}/hang"
    assert rows["/hang"]["error"] in (f"{hang} did not reach 'load' within 2s",
                                      f"{hang} took longer than 2s (opening a page)")
    assert rows["/page/1"]["status"] == "done"

    later = crawlcluster.submit("tests.render_spiders:OptionsSpider", project="later",
                                spider_kwargs={"base_url": js_site.url, "paths": ["/redirect"]})
    later.wait(timeout=60)
    assert later.stats()["failed"] == 0 and page_rows(pg, "later")["/redirect"]["status"] == "done"
    assert processes.procs["render"].poll() is None
    [worker] = crawlcluster.render_stats()
    assert worker["browsers_launched"] == 1 and worker["crashes"] == worker["hung_kills"] == 0


def test_killing_chromium_mid_render_retries_that_url_on_a_fresh_browser(processes, pg):
    site = JsSite(pages=2, slow_seconds=4)
    try:
        start(processes, render="render", fetch="fetch", parse="parse", store="store")
        crawl = crawlcluster.submit("tests.render_spiders:OptionsSpider", project="crash", spider_kwargs={
            "base_url": site.url, "paths": ["/slow"], "timeout_seconds": 20})
        assert wait_until(lambda: site.hits("browser")["/slow"] == 1, timeout=60)
        old = main_browser(processes, "render")
        assert old is not None
        old_tree = descendants(old)
        os.kill(old, signal.SIGKILL)
        crawl.wait(timeout=60)

        row = page_rows(pg, "crash")["/slow"]
        assert (row["status"], row["status_code"]) == ("done", 200), row["error"]
        assert site.hits("browser")["/slow"] == 2  # rendered again, once
        [worker] = crawlcluster.render_stats()
        assert worker["crashes"] == 1 and worker["browsers_launched"] == 2
        new = main_browser(processes, "render")
        assert new is not None and new != old and worker["browser_pid"] == new
        assert wait_until(lambda: not any(descendants(pid) for pid in old_tree), timeout=10)
        assert "crashed" in processes.log("render")
    finally:
        site.stop()


def test_stopped_or_killed_render_worker_leaves_no_chromium_process(js_site, processes, pg):
    start(processes, render="render", fetch="fetch", parse="parse", store="store")
    crawl = crawlcluster.submit("tests.render_spiders:OptionsSpider", project="stop",
                                spider_kwargs={"base_url": js_site.url, "paths": ["/page/1"]})
    crawl.wait(timeout=60)
    pids = processes.pids("render")
    assert len(browsers_of(pids)) >= 3  # browser, zygotes, renderer...
    os.killpg(processes.procs["render"].pid, signal.SIGTERM)  # warm shutdown
    processes.procs["render"].wait(timeout=30)
    assert browsers_of(pids) == []  # closed and waited for before the worker exited

    # a worker killed outright takes its browser along (PR_SET_PDEATHSIG)
    processes.start("render-b", "worker", "-Q", "render", "-n", "render-b@%h", *WORKER_ARGS)
    processes.wait_for_log("render-b", "ready.", timeout=60)
    again = crawlcluster.submit("tests.render_spiders:OptionsSpider", project="kill",
                                spider_kwargs={"base_url": js_site.url, "paths": ["/page/2"]})
    again.wait(timeout=60)
    pids = processes.pids("render-b")
    assert browsers_of(pids)
    processes.kill("render-b", signal.SIGKILL)
    assert wait_until(lambda: browsers_of(pids) == [], timeout=15), browsers_of(pids)


def test_auto_render_learns_which_shapes_need_a_browser_finds_script_links_and_renders_few_static_pages(
        processes, pg):
    """A mixed site (static pages, pages written by scripts, complete pages whose scripts add
    two links to pages only reachable that way) and a static site of 500 pages, crawled
    with render="auto". The hit log, per page: httpx served it at most once, the browser at
    most once, and together at least once (a sample or a page sent on to render is fetched
    once and rendered once; a page routed straight to render is only rendered)."""
    mixed, static = MixedSite(static_pages=15, app_pages=6, js_pages=6), JsSite(pages=499, static=True)
    try:
        start(processes, render="render", fetch="fetch", parse="parse", store="store")
        crawl = crawlcluster.submit("tests.render_spiders:TreeSpider", project="learn", spider_kwargs={
            "render": "auto", "start_urls": [mixed.url + "/", static.url + "/"],
            "allowed_domains": [host_of(mixed), host_of(static)]})
        stats = crawl.wait(timeout=180)
        assert stats["pending"] == stats["queued"] == 0 and stats["failed"] == 0

        for site in (mixed, static):
            http, browser = site.hits("http"), site.hits("browser")
            pages = site.page_paths()
            assert {p for p in http} | {p for p in browser if p in pages} >= pages  # every page served
            assert max(http[p] for p in pages) == 1 and max(browser[p] for p in pages) <= 1
            assert not set(http) - pages - {"/robots.txt"}  # nothing else asked for
        assert all(mixed.hits("browser")[f"/extra/{i}/{s}"] <= 1 for i in range(1, 7) for s in "ab")
        # every page found exactly once: one row and one item each, nothing else
        tasks, _items = load_rows(pg, "learn")
        rows = Counter((urlsplit(r["url"]).netloc, path_of(r["url"])) for r in tasks
                       if path_of(r["url"]) != "/robots.txt")
        assert set(rows) == {(host_of(site), p) for site in (mixed, static) for p in site.page_paths()}
        items = Counter((urlsplit(i["url"]).netloc, path_of(i["url"])) for i in crawl.results())
        assert set(items.values()) == {1} and len(items) == len(rows)
        # the script-written pages and the complete-plus-script pages are rendered, each once
        assert all(mixed.hits("browser")[f"/{kind}/{i}"] == 1 for kind in ("app", "js") for i in range(1, 7))

        learned = {(r["host"], r["shape"]): r for r in crawl.render_hosts(detail=True)}
        print({f"{h.split(':')[-1]}{s}": (r["decision"], r["samples"], r["agreed"], r["mismatches"])
               for (h, s), r in learned.items()})
        assert learned[(host_of(mixed), "/js/<n>")]["decision"] == "render"
        assert learned[(host_of(mixed), "/js/<n>")]["mismatches"] >= 1
        assert learned[(host_of(mixed), "/app/<n>")]["decision"] == "render"
        assert learned[(host_of(mixed), "/static/<n>")]["decision"] == "plain"
        assert learned[(host_of(static), "/page/<n>")]["decision"] == "plain"
        assert crawl.render_hosts() == [host_of(mixed)]

        # the static site of 500 pages: at most 5% rendered, by the hit log and by the stats
        rendered = sum(static.hits("browser")[p] for p in static.page_paths())
        hosts = {h["host"]: h for h in crawl.host_stats()}
        print(f"static site: {rendered} of {len(static.page_paths())} pages rendered; "
              f"host figures {hosts[host_of(static)]}")
        assert rendered <= 0.05 * len(static.page_paths())
        assert hosts[host_of(static)]["rendered"] == rendered
        assert hosts[host_of(static)]["rendered_share"] <= 0.05
        assert crawl.stats()["browser_seconds"] > 0
    finally:
        mixed.stop()
        static.stop()


def test_auto_render_rerenders_pages_parsed_plainly_when_a_recheck_finds_scripts_and_runs_callbacks_once(
        processes, pg, tmp_path: Path):
    """A shape learned as plain (2 samples agree) whose scripts start adding links later: the
    re-check of a later page shows the mismatch, and the pages of that shape parsed plainly
    before are rendered once and parsed again from the rendered page, so their script-only
    links are followed, with no second plain fetch. The callback (which counts its runs in a
    file) runs once on each rendered page: a sample's rendered run is the one its parse uses."""
    rate = 0.5
    site = LateScriptSite()
    try:
        urls = [(n, f"{site.url}/late/{n}") for n in range(1, 200)]
        # 2 learning samples, then pages the re-check passes over, then one it picks
        plain = [n for n, url in urls[2:] if not sampled(url, rate)][:4]
        rechecked = next(n for n, url in urls if sampled(url, rate) and n > max(plain))
        site.chain = [1, 2, *plain]
        processes.env.update({"CRAWLCLUSTER_RENDER_AUTO_AGREEMENTS": "2",
                              "CRAWLCLUSTER_RENDER_AUTO_RECHECK_RATE": str(rate),
                              "CRAWLCLUSTER_RENDER_PAGE_TIMEOUT_SECONDS": "10"})
        processes.start("worker", "worker", "-Q", "fetch,render,parse,store", "-n", "all@%h", *WORKER_ARGS)
        processes.wait_for_log("worker", "ready.", timeout=60)
        processes.beat()
        calls = tmp_path / "calls.txt"
        kwargs = {"render": "auto", "calls_file": str(calls), "allowed_domains": [host_of(site)]}
        crawl = crawlcluster.submit("tests.render_spiders:CountingSpider", project="late",
                                    spider_kwargs={**kwargs, "start_urls": [f"{site.url}/late/1"]})
        assert crawl.wait(timeout=60)["failed"] == 0
        learned = {r["shape"]: r for r in crawl.render_hosts(detail=True)}
        assert learned["/late/<n>"]["decision"] == "plain"
        parsed_plainly = {f"/late/{n}" for n in site.chain if not site.hits("browser")[f"/late/{n}"]}
        assert len(parsed_plainly) >= 2  # (a page may be a sample where a worker had not seen "plain" yet)

        site.scripts_add_links = True  # the shape's scripts now add a link each
        crawl = crawlcluster.submit("tests.render_spiders:CountingSpider", project="late",
                                    spider_kwargs={**kwargs, "start_urls": [f"{site.url}/late/{rechecked}"]})
        stats = crawl.wait(timeout=60)
        assert stats["failed"] == 0 and stats["pending"] == stats["queued"] == 0

        row = {r["shape"]: r for r in crawl.render_hosts(detail=True)}["/late/<n>"]
        print(f"/late/<n>: {row['decision']}, {row['samples']} samples, {row['mismatches']} mismatches, "
              f"{row['rerendered']} pages rendered again; parsed plainly before: {sorted(parsed_plainly)}")
        assert row["decision"] == "render" and row["mismatches"] == 1
        assert row["rerendered"] == len(parsed_plainly) and row["rerender_skipped"] == 0
        assert crawl.stats()["pages_rerendered"] == len(parsed_plainly)

        http, browser = site.hits("http"), site.hits("browser")
        lates = {f"/late/{n}" for n in [*site.chain, rechecked]}
        assert all(http[p] == 1 for p in lates)  # fetched plainly once, never again
        assert all(browser[p] == 1 for p in parsed_plainly | {f"/late/{rechecked}"})  # rendered once more
        assert all(browser[p] <= 1 for p in lates)
        # the script-only links of the pages parsed plainly before were followed, and of the re-check
        extras = {f"/extra/{p.rsplit('/', 1)[1]}" for p in parsed_plainly | {f"/late/{rechecked}"}}
        assert all(http[p] == 1 and browser[p] <= 1 for p in extras)
        rows = page_rows(pg, "late")
        assert set(rows) == lates | extras and {r["status"] for r in rows.values()} == {"done"}
        items = Counter(path_of(i["url"]) for i in crawl.results())
        assert set(items) == lates | extras and set(items.values()) == {1}

        # the callback: once per plain fetch and once per rendered page (a sample's rendered run
        # is the parse's), never twice on the same rendered page
        runs = Counter(tuple(line.split()) for line in calls.read_text().splitlines())
        assert max(runs.values()) == 1, runs
        assert {p for p, rendered in runs if rendered == "1"} == {p for p in browser if p in lates | extras}
    finally:
        site.stop()
