"""Flower for real: `celery -A crawlcluster flower` beside real workers during a live crawl.
Its HTTP API shows each worker with the queue it consumes and each task with a URL in its
arguments, and CRAWLCLUSTER_FLOWER_AUTH puts it behind basic auth."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

import crawlcluster
from crawlcluster.publish import describe_message
from tests.conftest import cluster_env
from tests.outcomes import assert_site_crawled, load_rows
from tests.queues import free_port

AUTH = ("crawl", "s3cret:with-colon")
STAGE_TASKS = {"crawlcluster.fetch", "crawlcluster.parse", "crawlcluster.store"}


def get(url: str, auth: tuple[str, str] | None = AUTH, timeout: float = 10) -> tuple[int, Any]:
    request = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
            is_json = "json" in response.headers.get("Content-Type", "")
            return response.status, (json.loads(body) if is_json else body)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def start_flower(processes, port: int) -> str:
    processes.start("flower", "flower", f"--port={port}", "--address=127.0.0.1")
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if get(f"{base}/healthcheck", auth=None, timeout=2)[0] == 200:
                return base
        except OSError:
            pass
        assert processes.procs["flower"].poll() is None, processes.log("flower")
        time.sleep(0.2)
    raise AssertionError("Flower did not answer within 60s:\n" + processes.log("flower")[-3000:])


def queues_of(worker: dict[str, Any]) -> list[str]:
    return sorted(q["name"] for q in worker.get("active_queues") or [])


def test_flower_shows_workers_per_queue_and_task_urls_during_a_live_crawl_behind_basic_auth(
        site, processes, pg):
    processes.env["CRAWLCLUSTER_FLOWER_AUTH"] = f"{AUTH[0]}:{AUTH[1]}"
    processes.env["CRAWLCLUSTER_FETCH_BATCH_SIZE"] = "4"  # more, smaller tasks: a longer live crawl
    for role in ("fetch", "parse", "store"):
        processes.worker(role, role)
    base = start_flower(processes, free_port())

    # without the password: nothing, neither the API nor the pages
    assert get(f"{base}/api/workers", auth=None)[0] == 401
    assert get(f"{base}/api/tasks", auth=None)[0] == 401
    assert get(f"{base}/", auth=None)[0] == 401
    assert get(f"{base}/api/workers", auth=("crawl", "wrong"))[0] == 401

    processes.beat()
    crawl = crawlcluster.submit([site.url + "/"], project="watched")
    seen_live: dict[str, dict[str, Any]] = {}
    workers: dict[str, Any] = {}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        stats = crawl.stats()
        if stats["pending"] + stats["queued"] == 0:
            break
        status, workers = get(f"{base}/api/workers?refresh=1")
        assert status == 200, workers
        status, tasks = get(f"{base}/api/tasks?limit=500")
        assert status == 200, tasks
        seen_live.update(tasks)
        time.sleep(0.5)
    crawl.wait(timeout=120)
    rows, items = load_rows(pg, "watched")
    assert_site_crawled(site, rows, items)

    # every worker, with the queue it consumes (Flower asks the workers: inspect active_queues)
    by_role = {name.split("@")[0]: worker for name, worker in workers.items()}
    assert {role: queues_of(by_role.get(role, {})) for role in ("fetch", "parse", "store")} == \
        {"fetch": ["fetch"], "parse": ["parse"], "store": ["store"]}, workers

    # tasks seen while the crawl ran: every stage, each naming a page of the site in its args
    assert seen_live, "Flower listed no task during the crawl"
    assert {t["name"] for t in seen_live.values()} >= STAGE_TASKS, {t["name"] for t in seen_live.values()}
    stage_tasks = {uuid: task for uuid, task in seen_live.items() if task["name"] in STAGE_TASKS}
    for uuid, task in stage_tasks.items():
        assert site.url + "/" in (task.get("args") or ""), (uuid, task["name"], task.get("args"))
        assert len(task["args"]) <= 4096  # Celery cuts the repr (and each long value in it)
        if task.get("worker"):
            assert task["worker"].split("@")[0] == task["name"].rsplit(".", 1)[1]


def test_describe_message_names_the_project_and_every_url_that_fits() -> None:
    fetch = {"project": "example", "tasks": [{"id": "a", "url": "https://example.com/a"},
                                              {"id": "b", "url": "https://example.com/b", "depth": 2}]}
    assert describe_message(fetch) == "example: 2 URLs: https://example.com/a, https://example.com/b"
    parse = {"project": "example", "pages": [{"id": str(n), "url": f"https://example.com/page/{n}",
                                              "body": b"\x78\x9c" * 500, "z": True} for n in range(100)]}
    text = describe_message(parse, max_chars=200)
    assert text.startswith("example: 100 URLs: https://example.com/page/0, https://example.com/page/1")
    assert len(text) <= 200 and text.endswith("more)") and "\\x" not in text
    assert describe_message({"project": "p", "pages": [{"id": "x", "url": "u"}]}) == "p: 1 URL: u"
    assert describe_message({"project": "p", "pages": []}) == "p: 0 URLs"
    assert describe_message({"project": "p", "tasks": None}) == "p: 0 URLs"  # malformed: no crash
    assert describe_message({"project": "p", "timer": "daily"}) == "p: timer='daily'"


def test_flower_auth_setting_becomes_flowers_basic_auth_unless_flower_is_told_otherwise(monkeypatch) -> None:
    from crawlcluster import settings
    from crawlcluster.app import export_flower_auth
    from crawlcluster.errors import ConfigurationError

    monkeypatch.delenv("FLOWER_BASIC_AUTH", raising=False)
    monkeypatch.setenv("CRAWLCLUSTER_FLOWER_AUTH", "admin:pw1,ops:pw:2")
    settings.reset()
    export_flower_auth(settings.current().flower_auth)
    assert os.environ["FLOWER_BASIC_AUTH"] == "admin:pw1,ops:pw:2"

    monkeypatch.setenv("FLOWER_BASIC_AUTH", "explicit:wins")
    monkeypatch.setenv("CRAWLCLUSTER_FLOWER_AUTH", "admin:other")
    settings.reset()
    export_flower_auth(settings.current().flower_auth)
    assert os.environ["FLOWER_BASIC_AUTH"] == "explicit:wins"

    monkeypatch.delenv("FLOWER_BASIC_AUTH")
    for bad in ("admin", "admin:", ":pw", "admin:pw,"):
        monkeypatch.setenv("CRAWLCLUSTER_FLOWER_AUTH", bad)
        settings.reset()
        with pytest.raises(ConfigurationError, match="CRAWLCLUSTER_FLOWER_AUTH must be user:password"):
            export_flower_auth(settings.current().flower_auth)
        assert "FLOWER_BASIC_AUTH" not in os.environ


def test_a_flower_auth_entry_without_a_user_is_never_echoed(monkeypatch) -> None:
    from crawlcluster import settings
    from crawlcluster.app import export_flower_auth
    from crawlcluster.errors import ConfigurationError

    monkeypatch.delenv("FLOWER_BASIC_AUTH", raising=False)
    for bad in ("hunter2-secret", "admin:pw,hunter2-secret", ":hunter2-secret", "hunter2-secret:"):
        monkeypatch.setenv("CRAWLCLUSTER_FLOWER_AUTH", bad)
        settings.reset()
        with pytest.raises(ConfigurationError) as error:
            export_flower_auth(settings.current().flower_auth)
        assert "hunter2" not in str(error.value) and "pw" not in str(error.value).replace("password", "")
        assert "not shown" in str(error.value), str(error.value)


def test_the_flower_guard_allows_loopback_or_a_password_and_refuses_an_open_bind() -> None:
    from crawlcluster.flower_guard import is_loopback, refusal

    assert all(is_loopback(a) for a in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(a) for a in ("", "0.0.0.0", "::", "10.0.0.5", "example.com"))
    assert refusal("127.0.0.1", 5555, has_auth=False) is None
    assert refusal("0.0.0.0", 5555, has_auth=True) is None
    assert refusal("", 5555, has_auth=False, unix_socket="/run/flower.sock") is None
    assert "every interface" in (refusal("", 5555, has_auth=False) or "")


def _flower(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "celery", "-A", "crawlcluster", "flower", *args],
                          env=env, capture_output=True, text=True, timeout=60)


def _listening(port: int) -> list[str]:
    """Local addresses (hex, as /proc/net/tcp* writes them) listening on ``port``."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            for line in list(lines)[1:]:
                local, state = line.split()[1], line.split()[3]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                    found.append(local.rsplit(":", 1)[0])
    return found


def test_flower_listens_on_loopback_by_default_and_refuses_an_open_address_without_a_password(
        processes, pg, redis_url) -> None:
    env = cluster_env(pg, redis_url)
    for key in ("FLOWER_ADDRESS", "FLOWER_BASIC_AUTH", "CRAWLCLUSTER_FLOWER_AUTH",
                "CRAWLCLUSTER_FLOWER_ADDRESS"):
        env.pop(key, None)
    port = free_port()
    refused = [_flower(env, f"--port={port}", "--address=0.0.0.0"),
               _flower({**env, "FLOWER_ADDRESS": "0.0.0.0"}, f"--port={port}"),
               _flower({**env, "CRAWLCLUSTER_FLOWER_ADDRESS": "::"}, f"--port={port}")]
    for result in refused:
        assert result.returncode == 2, result
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "refusing to start Flower on" in lines[0], result.stderr
        assert "CRAWLCLUSTER_FLOWER_AUTH=user:password" in lines[0] and "Traceback" not in result.stderr
    assert not _listening(port)

    # nothing configured: Flower listens, on 127.0.0.1 only
    processes.env.update(env)
    processes.start("flower", "flower", f"--port={port}")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not _listening(port):
        assert processes.procs["flower"].poll() is None, processes.log("flower")
        time.sleep(0.2)
    assert _listening(port) == ["0100007F"], _listening(port)
    assert get(f"http://127.0.0.1:{port}/healthcheck", auth=None)[0] == 200
    print(f"Flower: 3 open binds refused in one line each (exit 2); default bind {_listening(port)} "
          "(127.0.0.1)")
