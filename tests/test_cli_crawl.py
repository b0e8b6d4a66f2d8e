"""`crawlcluster crawl` as a user runs it: Ctrl-C on a terminal, SIGTERM, kill -9, output
formats, output paths refused before any fetch, failures in the summary, exit codes.

Every run is a real process against a local site whose hit log is the truth; the
frontier is the --db SQLite file, read after the process has gone.
"""

from __future__ import annotations

import csv
import fcntl
import json
import os
import signal
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.exc import OperationalError

from crawlcluster.schema import crawl_tasks, results
from tests.scripted_site import ScriptedSite, page

CLI = [sys.executable, "-m", "crawlcluster.cli"]
ROOT = Path(__file__).resolve().parent.parent
FAST_PAGES = 5  # with /slow, fewer than the 8 requests a host may have in flight: all sent at once
SLOW_SECONDS = 2.0  # /slow is in flight when the crawl is interrupted, and ends within the grace
GATE_BOUND_SECONDS = 60.0


def _env(site_url: str = "") -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["CLI_TEST_SITE"] = site_url
    env["PYTHONUNBUFFERED"] = "1"
    # one page per fetch message: a batch is handed on when its slowest page is fetched,
    # and /slow must not wait for a gated page
    env["CRAWLCLUSTER_FETCH_BATCH_SIZE"] = "1"
    return env


class GatedSite:
    """/p/0 links to /p/1../p/5 and /slow; each /p/N links to /g/N, which answers only once
    the gate opens; /slow takes SLOW_SECONDS and links to /after (gated too). Stopped
    while the /g/ pages hang, a crawl has done pages, a page that finishes within the
    grace, pages in flight that do not (left queued) and a page never sent (left pending)."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.site = ScriptedSite()
        self.url = self.site.url
        first_links = tuple(f"/p/{i}" for i in range(1, FAST_PAGES + 1)) + ("/slow",)
        self.site.route("/p/0", lambda n, h: page("P0", first_links))
        for i in range(1, FAST_PAGES + 1):
            self.site.route(f"/p/{i}", lambda n, h, i=i: page(f"P{i}", (f"/g/{i}",)))
            self.site.route(f"/g/{i}",
                            lambda n, h, i=i: (self.gate.wait(GATE_BOUND_SECONDS), page(f"G{i}"))[1])
        self.site.route("/slow", lambda n, h: (time.sleep(SLOW_SECONDS), page("Slow", ("/after",)))[1])
        self.site.route("/after", lambda n, h: (self.gate.wait(GATE_BOUND_SECONDS), page("After"))[1])
        self.pages = {"/p/0", *(f"/p/{i}" for i in range(1, FAST_PAGES + 1)), "/slow", "/after",
                      *(f"/g/{i}" for i in range(1, FAST_PAGES + 1))}

    def hits(self) -> dict[str, int]:
        with self.site.lock:
            return dict(self.site.counts)

    def stop(self) -> None:
        self.gate.set()
        self.site.stop()


@pytest.fixture
def gated():
    site = GatedSite()
    yield site
    site.stop()


def _wait_for(condition, what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Terminal:
    """A process on a pseudo-terminal of its own, as its session's foreground job: writing
    ^C to the terminal sends SIGINT to it the way a user's Ctrl-C does."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        master, slave = os.openpty()

        def become_foreground_job() -> None:
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd,
                                     preexec_fn=become_foreground_job)
        os.close(slave)
        self.master = master
        self.chunks: list[bytes] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO once the process has gone
                return
            if not data:
                return
            self.chunks.append(data)

    def ctrl_c(self) -> None:
        os.write(self.master, b"\x03")

    def wait(self, timeout: float = 90.0) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.reader.join(5)
            os.close(self.master)

    @property
    def text(self) -> str:
        return b"".join(self.chunks).decode("utf-8", "replace")


def _done_items(db: Path) -> list[dict[str, Any]]:
    """Items of the rows that are done in the --db file."""
    engine = create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        rows = conn.execute(select(results.c.item).join(crawl_tasks,
                                                        crawl_tasks.c.task_id == results.c.task_id)
                            .where(crawl_tasks.c.status == "done")).all()
    engine.dispose()
    return [item for (item,) in rows]


def _states(db: Path) -> dict[str, str]:
    engine = create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        rows = conn.execute(select(crawl_tasks.c.url, crawl_tasks.c.status)
                            .where(crawl_tasks.c.callback != "__robots__")).all()
    engine.dispose()
    return {urlsplit(url).path: status for url, status in rows}


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _urls(items: list[dict[str, Any]]) -> list[str]:
    return sorted(item["url"] for item in items)


def _interrupted_mid_crawl(gated: GatedSite) -> bool:
    hits = gated.hits()
    return hits.get("/slow", 0) > 0 and any(hits.get(f"/g/{i}", 0) for i in range(1, FAST_PAGES + 1))


def test_ctrl_c_on_a_terminal_keeps_every_done_item_and_a_second_run_resumes_without_refetching(gated,
                                                                                                tmp_path):
    out, db = tmp_path / "out.jsonl", tmp_path / "crawl.db"
    args = [*CLI, "crawl", gated.url + "/p/0", "-o", str(out), "--db", str(db), "--project", "gated"]
    term = Terminal(args, _env(), tmp_path)
    _wait_for(lambda: _interrupted_mid_crawl(gated), "/slow and a gated page to be in flight")
    term.ctrl_c()
    code = term.wait()
    assert code == 130, term.text[-3000:]
    assert "Traceback" not in term.text and "Aborted!" not in term.text
    assert "SIGINT" in term.text and f"--db {db}" in term.text  # how to resume

    states = _states(db)
    assert states["/slow"] == "done"  # in flight at Ctrl-C, finished within the grace
    assert states["/after"] == "pending"  # found after Ctrl-C: never sent
    assert {states[f"/g/{i}"] for i in range(1, FAST_PAGES + 1) if f"/g/{i}" in states} <= {"queued",
                                                                                            "pending"}
    done_items = _done_items(db)
    written = _jsonl(out)
    assert len(done_items) == sum(1 for s in states.values() if s == "done") == FAST_PAGES + 2
    assert _urls(written) == _urls(done_items)  # exactly the done rows' items, once each
    done_paths = {path for path, state in states.items() if state == "done"}

    gated.gate.set()
    second = subprocess.run(args + ["-q"], capture_output=True, text=True, timeout=180, env=_env(),
                            cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    hits = gated.hits()
    # no done page fetched again
    assert {path: hits[path] for path in done_paths} == dict.fromkeys(done_paths, 1)
    assert set(_states(db).values()) == {"done"}
    assert set(_states(db)) == gated.pages
    final = _jsonl(out)
    assert _urls(final) == _urls(_done_items(db))
    assert len(final) == len(gated.pages)


def test_a_second_ctrl_c_leaves_at_once_keeps_a_closed_json_array_and_names_the_kept_frontier(gated,
                                                                                              tmp_path):
    out = tmp_path / "out.json"
    # a grace far longer than the wait below: only the second Ctrl-C can end the run in time;
    # no --db: the temporary frontier is kept, and its path must be printed
    term = Terminal([*CLI, "crawl", gated.url + "/p/0", "-o", str(out), "--grace", "600"],
                    _env(), tmp_path)
    _wait_for(lambda: _interrupted_mid_crawl(gated) and '"url"' in out.read_text(encoding="utf-8"),
              "items in the file while /slow and a gated page are in flight")
    term.ctrl_c()
    _wait_for(lambda: "press Ctrl-C again" in term.text, "the first Ctrl-C to be acknowledged")
    term.ctrl_c()
    code = term.wait(timeout=60)
    assert code == 130, term.text[-3000:]
    assert "stopped at once by a second SIGINT" in term.text and "Traceback" not in term.text
    text = " ".join(term.text.split())
    db = Path(text.split(" and the frontier in ", 1)[1].split(" Resume with:", 1)[0])
    try:
        assert db.name == "crawl.db" and db.exists()
        assert f"--db {db}" in text.split("Resume with:", 1)[1]
        items = json.loads(out.read_text(encoding="utf-8"))  # still a closed JSON array
        stored = _urls(_done_items(db))
        assert items and all(url in stored for url in _urls(items))
    finally:
        for kept in db.parent.iterdir():
            kept.unlink()
        db.parent.rmdir()


def test_sigterm_stops_gracefully_and_the_json_array_holds_every_done_item(gated, tmp_path):
    out, db = tmp_path / "out.json", tmp_path / "crawl.db"
    proc = subprocess.Popen([*CLI, "crawl", gated.url + "/p/0", "-o", str(out), "--db", str(db), "-q",
                             "--grace", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(), cwd=tmp_path, start_new_session=True)
    try:
        _wait_for(lambda: _interrupted_mid_crawl(gated), "/slow and a gated page to be in flight")
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, stderr[-3000:]
    assert "stopped by SIGTERM" in stderr and "Traceback" not in stderr
    items = json.loads(out.read_text(encoding="utf-8"))  # a closed, valid JSON array
    assert isinstance(items, list) and items
    assert _urls(items) == _urls(_done_items(db))


def test_kill_9_mid_crawl_leaves_every_stored_item_in_the_jsonl_file(gated, tmp_path):
    out, db = tmp_path / "out.jsonl", tmp_path / "crawl.db"
    proc = subprocess.Popen([*CLI, "crawl", gated.url + "/p/0", "-o", str(out), "--db", str(db), "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(), cwd=tmp_path,
                            start_new_session=True)
    try:
        # the gated pages hang, so the stored items stop at the fast pages and /slow
        def all_stored_are_written() -> bool:
            if not db.exists() or not out.exists():
                return False
            try:
                stored = _done_items(db)
            except OperationalError:  # the schema is not created yet
                return False
            return (len(stored) == FAST_PAGES + 2
                    and len(out.read_text(encoding="utf-8").splitlines()) == len(stored))

        _wait_for(all_stored_are_written, "the stored items to reach the output file")
        proc.kill()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    written = _jsonl(out)
    assert _urls(written) == _urls(_done_items(db))
    assert len(written) == FAST_PAGES + 2


def test_json_output_is_one_valid_array_of_every_item(tmp_path):
    site = ScriptedSite()
    try:
        site.route("/", lambda n, h: page("Home", tuple(f"/a/{i}" for i in range(6))))
        for i in range(6):
            site.route(f"/a/{i}", lambda n, h, i=i: page(f"A{i}"))
        out = tmp_path / "items.json"
        run = subprocess.run([*CLI, "crawl", site.url + "/", "-o", str(out), "-q"], capture_output=True,
                             text=True, timeout=120, env=_env(), cwd=tmp_path)
        assert run.returncode == 0, run.stderr[-3000:]
        items = json.loads(out.read_text(encoding="utf-8"))
        assert sorted(item["title"] for item in items) == sorted(["Home", *(f"A{i}" for i in range(6))])
        assert "7 pages done, 0 failed, 7 items" in run.stderr  # robots.txt is not a page
    finally:
        site.stop()


def test_csv_output_has_a_column_for_every_key_even_when_later_items_bring_new_ones(tmp_path):
    site = ScriptedSite()
    try:
        for i in range(6):
            site.route(f"/w/{i}", lambda n, h, i=i: page(f"W{i}"))
        site.delay_seconds = 0.6  # the first items reach the file before the wider ones are stored
        out = tmp_path / "items.csv"
        run = subprocess.run([*CLI, "crawl", "tests.cli_spiders:WideningSpider", "-o", str(out), "-q",
                              "--ignore-robots"], capture_output=True, text=True, timeout=120,
                             env=_env(site.url), cwd=tmp_path)
        assert run.returncode == 0, run.stderr[-3000:]
        with out.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            header = reader.fieldnames
        assert set(header or ()) == {"url", "title", "price", "tags"}
        assert sorted(row["title"] for row in rows) == [f"W{i}" for i in range(6)]
        by_title = {row["title"]: row for row in rows}
        assert by_title["W1"]["price"] == "" and by_title["W3"]["price"] == "30"
        assert json.loads(by_title["W5"]["tags"]) == ["a", "5"]
        assert not list(tmp_path.glob(".crawlcluster-*"))  # no temporary file left beside it
    finally:
        site.stop()


@pytest.mark.parametrize("name, needle", [
    ("items.txt", "cannot tell the output format of"),
    ("nosuchdir/items.jsonl", "does not exist"),
])
def test_an_output_path_that_cannot_be_written_is_refused_before_any_fetch(tmp_path, name, needle):
    site = ScriptedSite()
    try:
        site.route("/", lambda n, h: page("Home"))
        run = subprocess.run([*CLI, "crawl", site.url + "/", "-o", str(tmp_path / name), "-q",
                              "--db", str(tmp_path / "f.db")], capture_output=True, text=True, timeout=120,
                             env=_env(), cwd=tmp_path)
        assert run.returncode == 2
        assert needle in run.stderr and "Traceback" not in run.stderr
        assert len(run.stderr.strip().splitlines()) == 1, run.stderr
        assert site.counts == {}  # the server saw no request
        assert not (tmp_path / "f.db").exists()
    finally:
        site.stop()


def test_a_callback_that_always_raises_shows_its_failures_with_reasons_and_exits_1(tmp_path):
    site = ScriptedSite()
    try:
        for i in range(5):
            site.route(f"/r/{i}", lambda n, h, i=i: page(f"R{i}"))
        out = tmp_path / "items.jsonl"
        run = subprocess.run([*CLI, "crawl", "tests.cli_spiders:RaisingSpider", "-o", str(out), "-q",
                              "--db", str(tmp_path / "f.db")], capture_output=True, text=True, timeout=120,
                             env=_env(site.url), cwd=tmp_path)
        assert run.returncode == 1, run.stderr[-3000:]
        assert "0 pages done, 5 failed, 0 items" in run.stderr
        assert "callback 5" in run.stderr
        assert "RaisingSpider.parse raised ValueError: no price on" in run.stderr
        assert "crawlcluster failures raising" in run.stderr
        assert out.read_text(encoding="utf-8") == ""
    finally:
        site.stop()


def test_retries_and_retry_delay_fetch_a_failing_page_again(tmp_path):
    site = ScriptedSite()
    try:
        site.route("/flaky", lambda n, h: page("Flaky") if n > 2 else (500, {}, b"busy"))
        run = subprocess.run([*CLI, "crawl", site.url + "/flaky", "-q", "--ignore-robots", "--retries", "2",
                              "--retry-delay", "0.2,0.3", "--db", str(tmp_path / "f.db")],
                             capture_output=True, text=True, timeout=120, env=_env(), cwd=tmp_path)
        assert run.returncode == 0, run.stderr[-3000:]
        assert site.counts["/flaky"] == 3
        assert "1 pages done, 0 failed, 1 items" in run.stderr and "2 retries" in run.stderr
    finally:
        site.stop()


def test_version_and_verbose_after_the_subcommand(tmp_path):
    from crawlcluster import __version__

    version = subprocess.run([*CLI, "--version"], capture_output=True, text=True, timeout=60, env=_env())
    assert version.returncode == 0 and version.stdout.strip() == f"crawlcluster {__version__}"
    site = ScriptedSite()
    try:
        site.route("/", lambda n, h: page("Home"))
        run = subprocess.run([*CLI, "crawl", site.url + "/", "-q", "--ignore-robots", "-v",
                              "--db", str(tmp_path / "f.db")], capture_output=True, text=True, timeout=120,
                             env=_env(), cwd=tmp_path)
        assert run.returncode == 0, run.stderr[-3000:]
        assert " INFO crawlcluster.submission: submitted" in run.stderr
    finally:
        site.stop()


def test_render_always_loads_pages_in_chromium_in_the_embedded_crawl(tmp_path):
    site = ScriptedSite()
    try:
        script = "<script>document.title = 'Built by script'</script>"
        site.route("/", lambda n, h: (200, {"Content-Type": "text/html"},
                                      f"<html><head><title>Empty</title></head><body>{script}</body></html>".encode()))
        out = tmp_path / "items.jsonl"
        run = subprocess.run([*CLI, "crawl", site.url + "/", "-o", str(out), "-q", "--ignore-robots",
                              "--render", "always"], capture_output=True, text=True, timeout=180, env=_env(),
                             cwd=tmp_path)
        assert run.returncode == 0, run.stderr[-3000:]
        assert [item["title"] for item in _jsonl(out)] == ["Built by script"]
    finally:
        site.stop()


def test_render_without_a_browser_is_refused_with_a_sentence(tmp_path):
    env = {**_env(), "CRAWLCLUSTER_CHROMIUM_PATH": str(tmp_path / "no-chromium")}
    run = subprocess.run([*CLI, "crawl", "http://127.0.0.1:9/", "--render", "always", "-q"],
                         capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert run.returncode == 1
    assert "rendering needs Chromium at" in run.stderr and "Traceback" not in run.stderr


def test_feed_sync_writes_each_page_once_and_widens_a_csv_header_from_the_database(sqlite_url, tmp_path):
    from crawlcluster.db import get_engine
    from crawlcluster.feeds import FeedSync, open_feed

    engine = get_engine(sqlite_url)

    def store(task_id: str, *items: dict[str, Any]) -> None:
        # as the store stage does it: a page's items replace its earlier ones in one transaction
        now = time.time()
        with engine.begin() as conn:
            conn.execute(results.delete().where(results.c.task_id == task_id))
            conn.execute(results.insert(),
                         [{"task_id": task_id, "item_index": i, "project": "p", "url": item["url"],
                                             "item": item, "created_at": now, "updated_at": now}
                                            for i, item in enumerate(items)])

    out = tmp_path / "items.csv"
    sync = FeedSync(open_feed(str(out)), engine, "p")
    sync.start()
    store("a", {"url": "u1", "title": "one"}, {"url": "u2", "title": "two"})
    assert sync.poll() == 2
    assert out.read_text(encoding="utf-8").splitlines() == ["url,title", "u1,one", "u2,two"]
    # the same page stored twice
    store("a", {"url": "u1", "title": "one again"}, {"url": "u2", "title": "two"})
    assert sync.poll() == 0
    store("b", {"url": "u3", "title": "three", "price": 3})
    sync.poll()
    assert out.read_text(encoding="utf-8").splitlines() == [
        "url,title,price", "u1,one again,", "u2,two,", "u3,three,3"]  # rewritten from the database
    assert sync.finish() == 3
    assert not list(tmp_path.glob(".crawlcluster-*"))


def test_without_db_an_interrupted_crawl_keeps_its_temporary_frontier_and_the_printed_command_resumes_it(
        gated, tmp_path):
    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen([*CLI, "crawl", gated.url + "/p/0", "-o", str(out), "-q", "--grace", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
                            cwd=tmp_path, start_new_session=True)
    try:
        _wait_for(lambda: _interrupted_mid_crawl(gated), "/slow and a gated page to be in flight")
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal sends it to the foreground job
        _, stderr = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr[-3000:]
    kept = Path(stderr.split("the frontier is kept in ", 1)[1].split(". Resume with:", 1)[0])
    assert kept.name == "crawl.db" and kept.exists()
    resume = stderr.rsplit("Resume with:", 1)[1].strip()
    assert resume.startswith("crawlcluster crawl ") and f"--db {kept}" in resume
    try:
        gated.gate.set()
        second = subprocess.run([*CLI, *resume.split()[1:]], capture_output=True, text=True, timeout=180,
                                env=_env(), cwd=tmp_path)
        assert second.returncode == 0, second.stderr[-3000:]
        assert set(_states(kept).values()) == {"done"}
        assert len(_jsonl(out)) == len(gated.pages)
    finally:
        kept.unlink()
        for extra in kept.parent.iterdir():
            extra.unlink()
        kept.parent.rmdir()
