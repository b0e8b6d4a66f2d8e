"""Bad configuration says so in one line: with the database unreachable, a malformed setting
or URL, the CLI prints one readable line on stderr and exits non-zero (no traceback, no
password); beat logs a database outage once per error_log_seconds with a count of the
repeats, not a traceback per tick."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

import pytest

from crawlcluster.devtools.local_cluster import LocalCluster
from crawlcluster.log_limits import RepeatedErrorLog
from tests.conftest import cluster_env
from tests.queues import free_port


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "crawlcluster.cli", *args], env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def closed_database_url() -> str:
    return f"postgresql+psycopg2://crawl:hunter2@127.0.0.1:{free_port()}/nowhere"


def test_cli_commands_say_in_one_line_that_the_database_is_unreachable(closed_database_url, redis_url):
    env = cluster_env(closed_database_url, redis_url)
    for args in (["status"], ["status", "someproject"], ["submit", "http://127.0.0.1:9/", "--project", "x"],
                 ["results", "someproject"], ["failures", "someproject"]):
        done = _cli(env, *args)
        lines = done.stderr.strip().splitlines()
        assert done.returncode != 0 and len(lines) == 1, (args, done.stderr[-2000:])
        assert "cannot reach the database at postgresql+psycopg2://crawl:***@127.0.0.1:" in lines[0], lines
        assert "Connection refused" in lines[0] and "CRAWLCLUSTER_DATABASE_URL" in lines[0]
        assert "hunter2" not in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("variable, value, needle", [
    ("CRAWLCLUSTER_PER_HOST_CONCURRENCY", "eight", "CRAWLCLUSTER_PER_HOST_CONCURRENCY='eight' is invalid"),
    ("CRAWLCLUSTER_DATABASE_URL", "postgres//nowhere",
     "CRAWLCLUSTER_DATABASE_URL is not a usable database URL"),
    ("CRAWLCLUSTER_SPIDER_PACKAGES", "my-proj", "CRAWLCLUSTER_SPIDER_PACKAGES='my-proj' is invalid"),
])
def test_a_malformed_setting_is_one_line_in_the_cli(redis_url, pg, variable, value, needle):
    env = {**cluster_env(pg, redis_url), variable: value}
    for args in (["status"], ["crawl", "http://127.0.0.1:9/", "-q"]):
        if args[0] == "crawl" and variable == "CRAWLCLUSTER_DATABASE_URL":
            continue  # the embedded crawl keeps its own SQLite file
        done = _cli(env, *args)
        lines = done.stderr.strip().splitlines()
        assert done.returncode != 0 and len(lines) == 1 and needle in lines[0], (args, done.stderr[-2000:])


def test_a_repeated_error_is_logged_once_per_interval_with_the_count_of_repeats(caplog):
    now = [0.0]
    log = RepeatedErrorLog(logging.getLogger("tests.repeats"), 60, clock=lambda: now[0])
    with caplog.at_level(logging.ERROR, logger="tests.repeats"):
        for second in range(0, 150):
            now[0] = float(second)
            log.report("database", "database unreachable (%s)", "refused")
    assert [r.getMessage() for r in caplog.records] == [
        "database unreachable (refused)",
        "database unreachable (refused) (and 59 more times in the last 60s, not logged)",
        "database unreachable (refused) (and 59 more times in the last 60s, not logged)"]
    assert log.clear("database") == 149 and not log.active("database")


def test_beat_logs_a_database_outage_at_a_bounded_rate(closed_database_url, redis_url, tmp_path):
    env = cluster_env(closed_database_url, redis_url)
    env.update({"CRAWLCLUSTER_ERROR_LOG_SECONDS": "3", "CRAWLCLUSTER_TICK_SECONDS": "0.1"})
    with LocalCluster(env, log_dir=tmp_path) as cluster:
        cluster.beat()
        cluster.wait_for_log("beat", "database unreachable", timeout=60)
        time.sleep(8)  # a bounded run: what it logs in this time is measured, not timed
        os.kill(cluster.procs["beat"].pid, 15)
        cluster.procs["beat"].wait(timeout=30)
    log = cluster.log("beat")
    outage_lines = [line for line in log.splitlines() if "database unreachable" in line]
    assert "Traceback" not in log, log[-3000:]
    assert 1 <= len(outage_lines) <= 5, outage_lines  # about 8 s / 3 s, at 10 ticks a second
    assert any("more times in the last" in line for line in outage_lines), outage_lines
    assert "hunter2" not in log
    print(f"beat with the database unreachable for ~8 s at 10 ticks/s: {len(log.splitlines())} lines logged, "
          f"{len(outage_lines)} about the outage, no traceback")
