"""Failed URLs listed with their reasons and fetched again: `crawl.failures()`,
`crawlcluster failures`, `crawl.retry_failed()` and `crawlcluster retry --failed`, on a real
cluster (Postgres) and on the embedded crawl's SQLite file. A local page that fails first
and then succeeds proves by its hits that a retried row is really fetched again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import crawlcluster
from tests.scripted_site import ScriptedSite, page

CLI = [sys.executable, "-m", "crawlcluster.cli"]


@pytest.fixture
def scripted():
    site = ScriptedSite()
    yield site
    site.stop()


@pytest.fixture
def cluster(processes):
    processes.env.update({"CRAWLCLUSTER_TICK_SECONDS": "0.1", "CRAWLCLUSTER_AUTO_PAUSE_FAILURES": "0"})
    processes.worker("all", "fetch,parse,store")
    processes.beat()
    return processes


def flaky_site(site: ScriptedSite, healthy: dict[str, bool]) -> None:
    """``/`` links to ``/flaky`` (500 until healthy), ``/gone`` (always 404) and ``/ok``."""
    site.route("/", lambda n, _h: page("Home", ("/flaky", "/gone", "/ok")))
    site.route("/flaky", lambda n, _h: page("Flaky, now fine") if healthy["now"] else (500, {}, b"broken"))
    site.route("/gone", lambda n, _h: (404, {}, b"no such page"))
    site.route("/ok", lambda n, _h: page("Fine"))


def finished_stats(crawl: crawlcluster.Crawl, timeout: float = 15) -> dict:
    """``crawl.wait()`` returns once nothing is pending or queued; the scheduler marks the
    project finished on its next tick: wait for that too (bounded)."""
    stats = crawl.wait(timeout=60)
    deadline = time.monotonic() + timeout
    while stats["status"] != "finished" and time.monotonic() < deadline:
        time.sleep(0.1)
        stats = crawl.stats()
    return stats


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=120)


def test_failures_are_listed_by_kind_and_retry_failed_refetches_them_on_a_cluster(cluster, scripted):
    healthy = {"now": False}
    flaky_site(scripted, healthy)
    crawl = crawlcluster.submit([scripted.url + "/"], project="flaky", settings={"retries": 0})
    stats = finished_stats(crawl)
    assert stats["failed"] == 2 and stats["status"] == "finished"
    assert crawl.failure_counts() == {"HTTP 404": 1, "HTTP 500": 1}
    (five,) = crawl.failures(kind="5xx")
    assert (five["url"], five["kind"], five["status_code"]) == (scripted.url + "/flaky", "HTTP 500", 500)

    listing = cli(cluster.env, "failures", "flaky")
    assert listing.returncode == 0, listing.stderr
    assert "2 failed: HTTP 404 1, HTTP 500 1" in listing.stdout
    assert scripted.url + "/flaky" in listing.stdout and scripted.url + "/gone" in listing.stdout
    assert "retry flaky --failed" in listing.stdout
    as_json = [json.loads(line) for line in cli(cluster.env, "failures", "flaky", "--kind", "404", "--json")
               .stdout.splitlines()]
    assert [(r["url"], r["kind"], r["status_code"]) for r in as_json] == [
        (scripted.url + "/gone", "HTTP 404", 404)]

    healthy["now"] = True
    retried = cli(cluster.env, "retry", "flaky", "--failed", "--kind", "5xx")
    assert retried.returncode == 0, retried.stderr
    assert "flaky: 1 failed URLs of kind '5xx' pending again" in retried.stderr
    stats = finished_stats(crawl)
    assert stats["failed"] == 1 and stats["status"] == "finished"
    assert len(scripted.hits("/flaky")) == 2 and len(scripted.hits("/gone")) == 1
    assert len(scripted.hits("/ok")) == 1 and len(scripted.hits("/")) == 1
    assert crawl.failure_counts() == {"HTTP 404": 1}
    titles = {item.get("title") for item in crawl.results()}
    assert "Flaky, now fine" in titles

    # the 404 once more through the API: fetched again, fails again, with fresh retries used up
    assert crawl.retry_failed() == 1
    assert crawl.wait(timeout=60)["failed"] == 1
    assert len(scripted.hits("/gone")) == 2
    nothing = cli(cluster.env, "retry", "flaky", "--failed", "--kind", "timeout")
    assert nothing.returncode == 0 and "no failed URLs of kind 'timeout' to retry" in nothing.stderr
    missing = cli(cluster.env, "failures", "no-such-project")
    assert missing.returncode == 1 and "no project named 'no-such-project'" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_a_healthy_site_s_broken_pages_retried_last_end_the_crawl_without_an_auto_pause(scripted,
                                                                                      tmp_path: Path):
    """A site of 30 good pages and 12 that always answer 500, crawled with the default
    auto-pause (10 failures in a row) and retry policy: the broken pages' last retries fail
    one after another once every good page is done, which is a run of 12 failures, but
    nothing untried is left to protect. The crawl ends by itself after their last retry,
    instead of pausing auto_pause_seconds (5 minutes) per trial of 2 pages."""
    good = [f"/good/{i}" for i in range(30)]
    broken = [f"/broken/{i}" for i in range(12)]
    scripted.route("/", lambda n, _h: page("Home", tuple(good + broken)))
    for path in good:
        scripted.route(path, lambda n, _h: page("Fine"))
    for path in broken:
        scripted.route(path, lambda n, _h: (500, {}, b"broken"))
    db = tmp_path / "crawl.db"
    started = time.monotonic()
    run = cli(dict(os.environ), "crawl", scripted.url + "/", "--db", str(db), "-q", "--project", "broken",
              "--retry-delay", "1,2")
    print(f"crawl of 30 good and 12 broken pages: {time.monotonic() - started:.1f} s")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "paused after" not in run.stderr
    assert [len(scripted.hits(p)) for p in broken] == [3] * 12  # first try and the two retries
    assert [len(scripted.hits(p)) for p in good] == [1] * 30
    crawl = crawlcluster.Crawl("broken", database_url=f"sqlite:///{db}")
    stats = crawl.stats(figures=False)
    assert (stats["status"], stats["failed"], stats["done"]) == ("finished", 12, 32)  # with / and robots.txt
    assert crawl.failure_counts() == {"HTTP 500": 12}


def test_embedded_crawl_failures_are_listed_and_refetched_after_retry_failed(scripted, tmp_path: Path):
    healthy = {"now": False}
    flaky_site(scripted, healthy)
    db = tmp_path / "crawl.db"
    env = {**os.environ, "CRAWLCLUSTER_RETRIES": "0", "CRAWLCLUSTER_AUTO_PAUSE_FAILURES": "0"}
    first = cli(env, "crawl", scripted.url + "/", "--db", str(db), "-q", "--project", "flaky")
    assert first.returncode == 0, first.stderr[-3000:]
    on_file = {**env, "CRAWLCLUSTER_DATABASE_URL": f"sqlite:///{db}"}
    listing = cli(on_file, "failures", "flaky")
    assert "2 failed: HTTP 404 1, HTTP 500 1" in listing.stdout, listing.stderr
    crawl = crawlcluster.Crawl("flaky", database_url=f"sqlite:///{db}")
    assert {r["kind"] for r in crawl.failures()} == {"HTTP 404", "HTTP 500"}

    healthy["now"] = True
    retried = cli(on_file, "retry", "flaky", "--failed")
    assert "flaky: 2 failed URLs pending again" in retried.stderr, retried.stderr
    second = cli(env, "crawl", scripted.url + "/", "--db", str(db), "-q", "--project", "flaky")
    assert second.returncode == 0, second.stderr[-3000:]
    assert len(scripted.hits("/flaky")) == 2 and len(scripted.hits("/gone")) == 2
    assert len(scripted.hits("/")) == 1 and len(scripted.hits("/ok")) == 1  # done rows stay done
    assert crawl.failure_counts() == {"HTTP 404": 1}
    assert crawl.stats(figures=False)["done"] == 4  # /, /flaky, /ok and robots.txt
