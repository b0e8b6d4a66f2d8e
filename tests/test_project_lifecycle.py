"""A project's spider, cancel and resume, and what its status says, on real rows: URLs added
to a spider's project go to that spider; another spider is refused; a failed URL submitted
again is fetched again; resume after cancel fetches the cancelled rows; the scheduler's
liveness with and without a beat; an ETA that counts a retry due in an hour; `status` in
80 columns."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from rich.console import Console

import crawlcluster
from crawlcluster.client import CrawlTimeout, scheduler_health
from crawlcluster.dashboard import projects_table
from crawlcluster.errors import ConfigurationError
from crawlcluster.progress import CrawlProgress
from tests.scripted_site import ScriptedSite, page

CLI = [sys.executable, "-m", "crawlcluster.cli"]
TITLES = "tests.project_spiders:TitleSpider"


@pytest.fixture
def scripted():
    site = ScriptedSite()
    for name in ("a", "b", "c", "d"):
        site.route(f"/{name}", lambda n, _h, name=name: page(f"Page {name}", (f"/{name}/detail",)))
        site.route(f"/{name}/detail", lambda n, _h, name=name: page(f"Detail {name}"))
    yield site
    site.stop()


def start_cluster(processes):
    processes.env.update({"CRAWLCLUSTER_TICK_SECONDS": "0.1", "CRAWLCLUSTER_AUTO_PAUSE_FAILURES": "0"})
    processes.worker("all", "fetch,parse,store")
    processes.beat()
    return processes


def poll(predicate, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=120)


def test_urls_added_to_a_spider_project_are_crawled_by_its_own_spider(processes, scripted):
    cluster = start_cluster(processes)
    crawl = crawlcluster.submit(TITLES, project="keep", spider_kwargs={"start_urls": [scripted.url + "/a"]})
    assert crawl.wait(timeout=60)["failed"] == 0
    added = cli(cluster.env, "submit", scripted.url + "/b", "--project", "keep")
    assert added.returncode == 0, added.stderr
    crawlcluster.submit([scripted.url + "/c"], project="keep")
    stats = crawl.wait(timeout=60)
    assert stats["failed"] == 0 and stats["done"] == 7  # a, b, c, their details, robots.txt
    items = {item["url"]: item for item in crawl.results()}
    for name in ("a", "b", "c"):
        assert items[f"{scripted.url}/{name}"]["callback"] == "parse"
        assert items[f"{scripted.url}/{name}/detail"]["callback"] == "parse_detail"
    assert {item["spider"] for item in items.values()} == {"titles"}
    (project,) = [p for p in crawlcluster.list_projects() if p["name"] == "keep"]
    assert project["spider"] == TITLES


def test_another_spider_is_refused_naming_both_unless_it_is_meant_to_replace(pg, scripted):
    crawlcluster.submit(TITLES, project="mine", spider_kwargs={"start_urls": [scripted.url + "/a"]})
    with pytest.raises(ConfigurationError) as refused:
        crawlcluster.submit("tests.project_spiders:OtherSpider", project="mine")
    assert TITLES in str(refused.value) and "tests.project_spiders:OtherSpider" in str(refused.value)
    assert "replace_spider=True" in str(refused.value)
    env = {**os.environ, "CRAWLCLUSTER_DATABASE_URL": pg}
    run = cli(env, "submit", "tests.project_spiders:OtherSpider", "--project", "mine")
    assert run.returncode == 1 and "--replace-spider" in run.stderr and "Traceback" not in run.stderr
    (project,) = [p for p in crawlcluster.list_projects() if p["name"] == "mine"]
    assert project["spider"] == TITLES
    replaced = cli(env, "submit", "tests.project_spiders:OtherSpider", "--project", "mine",
                   "--replace-spider")
    assert replaced.returncode == 0, replaced.stderr
    (project,) = [p for p in crawlcluster.list_projects() if p["name"] == "mine"]
    assert project["spider"] == "tests.project_spiders:OtherSpider"


def test_a_failed_url_submitted_again_is_fetched_again_and_a_done_one_is_not(processes, scripted):
    start_cluster(processes)
    healthy = {"now": False}
    scripted.route("/flaky", lambda n, _h: page("Flaky, now fine") if healthy["now"] else (503, {}, b"busy"))
    crawl = crawlcluster.submit([scripted.url + "/flaky", scripted.url + "/d/detail"], project="again",
                                settings={"retries": 0})
    assert crawl.wait(timeout=60)["failed"] == 1
    healthy["now"] = True
    crawlcluster.submit([scripted.url + "/flaky", scripted.url + "/d/detail"], project="again")
    stats = crawl.wait(timeout=60)
    assert stats["failed"] == 0 and stats["done"] == 3
    assert len(scripted.hits("/flaky")) == 2 and len(scripted.hits("/d/detail")) == 1
    assert "Flaky, now fine" in {item["title"] for item in crawl.results()}


def test_resume_after_cancel_fetches_the_cancelled_rows(processes, scripted):
    env = processes.env
    crawl = crawlcluster.submit([scripted.url + f"/{name}" for name in "abc"], project="halted", max_depth=0)
    cancelled = cli(env, "cancel", "halted")
    assert "halted: cancelled; 3 URLs cancelled" in cancelled.stderr, cancelled.stderr
    assert crawl.stats(figures=False)["cancelled"] == 3
    start_cluster(processes)
    resumed = cli(env, "resume", "halted")
    assert resumed.returncode == 0, resumed.stderr
    assert "halted: resumed 3 cancelled URLs" in resumed.stderr
    stats = crawl.wait(timeout=60)
    assert stats["done"] == 4 and stats["cancelled"] == 0  # a, b, c and robots.txt
    assert all(len(scripted.hits(f"/{name}")) == 1 for name in "abc")
    again = cli(env, "resume", "halted")
    assert "halted: nothing to resume" in again.stderr


def test_scheduler_health_without_a_beat_with_one_and_after_it_died(processes, scripted):
    assert scheduler_health()["message"] == "no scheduler has ever run (start `celery -A crawlcluster beat`)"
    crawl = crawlcluster.submit([scripted.url + "/a"], project="nobeat", max_depth=0)
    stats = crawl.stats()
    assert stats["status"] == "running" and "no scheduler has ever run" in stats["waiting"][0]
    with pytest.raises(CrawlTimeout) as timed_out:
        crawl.wait(timeout=0.5, poll_seconds=0.1)
    assert "1 pending and 0 queued rows" in str(timed_out.value)
    assert "no scheduler has ever run" in str(timed_out.value)
    status = cli(processes.env, "status")
    assert "stalled" in status.stdout and "no scheduler has ever run" in status.stdout, status.stderr

    start_cluster(processes)
    assert crawl.wait(timeout=60)["done"] == 2
    health = scheduler_health()
    assert health["alive"] and health["holder"] and health["seconds_since_seen"] < 10
    seen = []
    assert poll(lambda: seen.append(scheduler_health()["last_seen_at"]) or len(set(seen)) >= 3, timeout=20)

    processes.kill("beat", signal.SIGKILL)
    assert poll(lambda: not scheduler_health()["alive"], timeout=30)
    message = scheduler_health()["message"]
    assert message.startswith("scheduler not seen for ") and message.endswith(" s")
    crawlcluster.submit([scripted.url + "/b"], project="nobeat")
    assert message.split(" for ")[0] in " ".join(crawl.stats()["waiting"])


def test_eta_counts_a_retry_due_in_an_hour_and_a_paused_project_has_none(processes, scripted):
    cluster = start_cluster(processes)
    scripted.route("/later", lambda n, _h: (503, {}, b"busy"))
    crawl = crawlcluster.submit([scripted.url + "/later", scripted.url + "/a"], project="an-hour-away",
                                max_depth=0, settings={"retries": 2, "retry_delays": "3600"})
    assert poll(lambda: crawl.stats(figures=False)["done"] == 2
                and crawl.stats(figures=False)["pending"] == 1)
    stats = crawl.stats()
    assert stats["eta_seconds"] >= 3500
    assert stats["next_due_at"] >= time.time() + 3500
    (reason,) = stats["waiting"]
    assert reason.startswith("1 retry due in 0:59:") or reason == "1 retry due in 1:00:00"
    bar = CrawlProgress("an-hour-away")
    assert reason in bar.detail(stats)
    with pytest.raises(CrawlTimeout) as timed_out:
        crawl.wait(timeout=0.3, poll_seconds=0.1)
    assert "1 pending and 0 queued rows" in str(timed_out.value) and "1 retry due in" in str(timed_out.value)

    crawlcluster.submit([scripted.url + "/b"], project="a-much-longer-project-name-than-usual", max_depth=0)
    crawlcluster.Crawl("a-much-longer-project-name-than-usual").wait(timeout=60)
    crawl.pause()
    paused = crawl.stats()
    assert paused["eta_seconds"] is None and paused["waiting"][0] == "paused by the user"
    console = Console(width=80, record=True)
    console.print(projects_table([(name, crawlcluster.Crawl(name).stats())
                                  for name in ("an-hour-away", "a-much-longer-project-name-than-usual")]))
    text = console.export_text()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    assert "canc" in text and "paused" in text and "finished" in text
    rows = [line.split() for line in text.splitlines()
            if line.startswith(("an-hour-away ", "a-much-longer-"))]
    assert [(row[1], row[-1]) for row in rows] == [("paused", "-"), ("finished", "-")]  # no ETA for either

    status = cli({**cluster.env, "COLUMNS": "80"}, "status")
    assert status.returncode == 0, status.stderr
    assert "…" not in status.stdout and max(len(line) for line in status.stdout.splitlines()) <= 80
    assert "an-hour-away: paused by the user" in status.stdout
    assert "last tick" in status.stdout
    crawl.cancel()
    assert crawl.stats()["eta_seconds"] is None


def test_waiting_names_a_postponed_host_and_rows_no_render_worker_takes(processes, scripted, monkeypatch):
    from crawlcluster import stats as stats_module
    from crawlcluster.urls import url_host

    monkeypatch.setattr(stats_module, "RENDER_SILENCE_SECONDS", 0.5)  # read here, by the client
    start_cluster(processes)  # fetch, parse and store workers and beat; no render worker
    down = ScriptedSite()
    try:
        down.route("/robots.txt", lambda n, _h: (503, {}, b"down for maintenance"))
        robots_down = crawlcluster.submit([down.url + "/x"], project="robots-down")
        host = url_host(down.url + "/x")
        expected = f"host {host} postponed: robots.txt unreachable, next try in 0:"
        assert poll(lambda: any(r.startswith(expected) for r in robots_down.stats()["waiting"]),
                    timeout=30), \
            robots_down.stats()["waiting"]
        assert len(down.hits("/x")) == 0
    finally:
        down.stop()
    browser = crawlcluster.submit("tests.render_spiders:TreeSpider", project="needs-browser",
                                  spider_kwargs={"start_urls": [scripted.url + "/a"], "render": True})
    expected = "1 row waits for the render queue: no render worker seen"
    assert poll(lambda: any(r.startswith(expected) for r in browser.stats()["waiting"]), timeout=30), \
        browser.stats()["waiting"]
    stats = browser.stats()
    assert stats["queued"] == 1 and len(scripted.hits("/a")) == 0
    assert expected in CrawlProgress("needs-browser").detail(stats)
