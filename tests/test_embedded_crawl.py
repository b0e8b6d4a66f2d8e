"""The one-command crawl (`crawlcluster crawl`) of the 300-page demo site, in one process
with an in-memory transport and an SQLite file, checked against the site's hit log."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

from tests.outcomes import assert_site_crawled, load_rows

CLI = [sys.executable, "-m", "crawlcluster.cli"]


def test_cli_crawl_fetches_every_reachable_page_once_and_writes_one_item_per_page(site, tmp_path: Path):
    out = tmp_path / "items.jsonl"
    frontier = tmp_path / "frontier.db"
    run = subprocess.run([*CLI, "crawl", site.url + "/", "-o", str(out), "--db", str(frontier), "-q",
                          "--project", "demo"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    tasks, items = load_rows(f"sqlite:///{frontier}", "demo")
    assert_site_crawled(site, tasks, items)
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == len(items) == len(site.site.html_pages) + len(site.site.non_html)
    assert sorted(line["url"] for line in lines) == sorted(item["url"] for item in items)
    assert "items written to" in run.stderr


def test_cli_crawl_max_pages_bounds_the_frontier_and_the_fetches(site, tmp_path: Path):
    out = tmp_path / "items.csv"
    frontier = tmp_path / "frontier.db"
    run = subprocess.run([*CLI, "crawl", site.url + "/", "-o", str(out), "--db", str(frontier), "-q",
                          "--max-pages", "25", "--project", "small"], capture_output=True, text=True,
                          timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    tasks, items = load_rows(f"sqlite:///{frontier}", "small")
    pages = [t for t in tasks if t["callback"] != "__robots__"]
    assert len(pages) == 25 and len(tasks) == 26  # and the site's robots.txt
    assert sum(site.hits().values()) == 26
    with out.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(items) > 0
    assert {"url", "status", "title"} <= set(rows[0])


def test_cli_crawl_rejects_an_invalid_url_with_a_sentence(tmp_path: Path):
    run = subprocess.run([*CLI, "crawl", "ftp://example.org/x", "-q", "--db", str(tmp_path / "f.db")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert "invalid URL 'ftp://example.org/x'" in run.stderr
    assert "Traceback" not in run.stderr


def test_cli_crawl_delay_and_per_host_space_requests_to_one_host(tmp_path: Path):
    from tests.scripted_site import ScriptedSite, page

    site = ScriptedSite()
    try:
        for i in range(5):
            site.route(f"/d/{i}", lambda n, _h, i=i: page(f"D{i}"))
        run = subprocess.run([*CLI, "crawl", *[f"{site.url}/d/{i}" for i in range(5)], "-q", "--delay", "0.3",
                              "--per-host", "1", "--db", str(tmp_path / "f.db")],
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr[-2000:]
        times = [t for t, p, _ in site.log if p.startswith("/d/")]
        assert len(times) == 5
        assert min(b - a for a, b in zip(times, times[1:])) >= 0.3 - 0.1
    finally:
        site.stop()


def test_cli_set_changes_a_running_projects_settings_and_rejects_unknown_ones(pg, tmp_path: Path):
    import os

    import crawlcluster

    crawl = crawlcluster.submit(["http://site.invalid/"], project="tuned", database_url=pg)
    env = {**os.environ, "CRAWLCLUSTER_DATABASE_URL": pg}
    run = subprocess.run([*CLI, "set", "tuned", "rate=5", "burst=10", "per_host_delay=0.5"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert run.returncode == 0, run.stderr
    with crawl.engine.connect() as conn:
        from crawlcluster.database.projects import project_row

        row = project_row(conn, "tuned")
    assert (row["rate"], row["burst"], row["settings"]["per_host_delay"]) == (5.0, 10.0, 0.5)
    bad = subprocess.run([*CLI, "set", "tuned", "speed=9"], capture_output=True, text=True, timeout=60,
                         env=env)
    assert bad.returncode == 1 and "unknown project setting 'speed'" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_cli_submit_takes_retries_and_retry_delays_into_the_projects_rows(pg, tmp_path: Path):
    import os

    from sqlalchemy import select

    from crawlcluster.database.projects import project_row
    from crawlcluster.db import get_engine
    from crawlcluster.schema import crawl_tasks

    env = {**os.environ, "CRAWLCLUSTER_DATABASE_URL": pg}
    run = subprocess.run([*CLI, "submit", "http://site.invalid/", "--project", "retrying", "--retries", "1",
                          "--retry-delay", "2,5"], capture_output=True, text=True, timeout=60, env=env)
    assert run.returncode == 0, run.stderr
    engine = get_engine(pg)
    with engine.connect() as conn:
        settings = project_row(conn, "retrying")["settings"]
        retries_left = conn.execute(select(crawl_tasks.c.retries_left)
                                    .where(crawl_tasks.c.project == "retrying")).scalar_one()
    assert (settings["retries"], settings["retry_delays"], retries_left) == (1, [2.0, 5.0], 1)
    bad = subprocess.run([*CLI, "submit", "http://site.invalid/", "--retry-delay", "soon"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert bad.returncode == 2 and "comma-separated" in bad.stderr and "Traceback" not in bad.stderr


def test_an_embedded_crawl_after_the_app_published_to_redis_in_the_same_process_runs(redis_url, tmp_path):
    """The Python API in a process that used the Celery app against Redis first (a cluster
    crawl's task run in-process, say): the app caches its broker connections and publishers,
    and an embedded crawl then sent its fetch messages to Redis, where no worker of its own
    took them. Each embedded crawl builds its publishers for its own in-memory broker."""
    from crawlcluster.app import app
    from crawlcluster.db import dispose_all
    from crawlcluster.embedded import run_embedded
    from tests.scripted_site import ScriptedSite, page

    app.conf.update(broker_url=redis_url, broker_transport=None)
    app._pool = None
    app.amqp._producer_pool = None
    with app.producer_or_acquire() as producer:  # the app's publishers, built for Redis
        assert producer.connection.transport.driver_type == "redis"
    site = ScriptedSite()
    site.route("/", lambda n, h: page("Home", ("/next",)))
    site.route("/next", lambda n, h: page("Next"))
    try:
        result = run_embedded([site.url + "/"], project="after-redis", database_path=str(tmp_path / "r.db"),
                              progress=False, timeout_seconds=60, settings={"obey_robots": False})
    finally:
        site.stop()
        dispose_all()
    assert (result.stats["done"], result.stats["queued"]) == (2, 0)
    assert len(site.hits("/")) == len(site.hits("/next")) == 1


def test_after_a_page_hung_past_the_stop_a_later_crawl_in_the_same_process_runs(tmp_path):
    """The Python API after a stop that left a page hanging: once the result is released,
    the pooled SQLite connection is an ordinary one and a second embedded crawl runs to
    its end (Celery's stop flag from the first worker does not stop the second)."""
    import threading
    import time

    from crawlcluster.db import dispose_all, get_engine
    from crawlcluster.embedded import run_embedded
    from tests.scripted_site import ScriptedSite, page

    release_hang = threading.Event()
    site = ScriptedSite()
    site.route("/", lambda n, h: page("Home", ("/hang",)))
    site.route("/hang", lambda n, h: (release_hang.wait(60), page("Hang"))[1])
    site.route("/other", lambda n, h: page("Other", ("/other/2",)))
    site.route("/other/2", lambda n, h: page("Other 2"))
    stop = threading.Event()
    try:
        def stop_once_hanging() -> None:
            for _ in range(1200):  # bounded: 60 s
                if site.hits("/hang"):
                    break
                time.sleep(0.05)
            stop.set()

        threading.Thread(target=stop_once_hanging, daemon=True).start()
        first = run_embedded([site.url + "/"], project="hung", database_path=str(tmp_path / "hung.db"),
                             progress=False, stop=stop, grace_seconds=0.5, settings={"obey_robots": False})
        assert first.interrupted and not first.worker_finished
        first.release()
        with get_engine().connect() as conn:  # the pooled connection, back in ordinary mode
            assert conn.connection.driver_connection.isolation_level is not None
        second = run_embedded([site.url + "/other"], project="later",
                              database_path=str(tmp_path / "later.db"),
                              output=str(tmp_path / "later.jsonl"), progress=False, timeout_seconds=60,
                              settings={"obey_robots": False})
        assert second.interrupted is None and second.pages["done"] == 2 and second.exported == 2
    finally:
        release_hang.set()
        site.stop()
        dispose_all()
