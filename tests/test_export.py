"""Results export at scale: `crawlcluster results` streams 200,000 items from Postgres with a
server-side cursor, so its memory stays flat however large the export is (pyspider #683)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from crawlcluster import db

ROOT = Path(__file__).resolve().parent.parent
ROWS = 200_000
PROJECT = "bigexport"
WORDS = "crawl frontier fetch parse store worker queue broker politeness robots host url link page".split()


def _insert_results(database_url: str, rows: int, project: str = PROJECT, chunk: int = 50_000) -> None:
    """A project row and ``rows`` result rows (about 700 bytes of JSON each), by COPY."""
    engine = create_engine(database_url)
    now = time.time()
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute(
            "INSERT INTO projects (name, spider, status, settings, tasks_created, created_at, updated_at) "
            "VALUES (%s, %s, 'finished', '{}', %s, %s, %s)",
            (project, "crawlcluster.spider:LinkSpider", rows, now, now))
        for start in range(0, rows, chunk):
            buf = io.StringIO()
            for n in range(start, min(rows, start + chunk)):
                url = f"http://export.test/page/{n}"
                text = " ".join(WORDS[(n + i) % len(WORDS)] for i in range(90))
                item = json.dumps({"url": url, "title": f"Page {n}", "n": n, "text": text,
                                   "out_links": [f"http://export.test/page/{n + 1}"]})
                # COPY text format: tab-separated, backslashes escaped
                escaped = item.replace(chr(92), chr(92) * 2)
                buf.write(f"{project[:8]}{n:024x}\t0\t{project}\t{url}\t{escaped}\t{now}\t{now}\n")
            buf.seek(0)
            cur.copy_expert(
                "COPY results (task_id, item_index, project, url, item, created_at, updated_at) FROM STDIN",
                buf)
        raw.commit()
    finally:
        raw.close()
        engine.dispose()


def _hwm_bytes(pid: int) -> int:
    """The process's peak resident set (VmHWM); 0 once it has exited."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def _run_export(database_url: str, *args: str,
                project: str = PROJECT) -> tuple[subprocess.CompletedProcess, int, float]:
    """Run the CLI export as a child process; return it, its peak RSS in bytes and its wall time.

    The peak is the child's own VmHWM, polled while it runs (it only grows, so the last
    reading is the peak). getrusage/wait4 would not do: a forked child's maxrss starts
    at the parent's RSS, and this test process has just built 200,000 rows."""
    env = dict(os.environ, CRAWLCLUSTER_DATABASE_URL=database_url, PYTHONPATH=str(ROOT))
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "crawlcluster.cli", "results", project, *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    peak = 0
    try:
        deadline = time.monotonic() + 240
        while proc.poll() is None:  # the output is a file: the pipes carry a line or two
            peak = max(peak, _hwm_bytes(proc.pid))
            if time.monotonic() > deadline:
                pytest.fail("the export took longer than 240 s")
            time.sleep(0.02)
        stdout, stderr = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=10)
    completed = subprocess.CompletedProcess(proc.args, proc.returncode, stdout.decode(), stderr.decode())
    return completed, peak, time.monotonic() - started


@pytest.fixture
def big_project(pg: str) -> str:
    _insert_results(pg, 10, project="tiny")
    _insert_results(pg, ROWS)
    db.dispose_all()
    return pg


def test_export_of_200000_items_streams_in_bounded_memory(big_project: str, tmp_path: Path) -> None:
    # the same command on 10 items: what the interpreter and its imports take anyway
    tiny, baseline_rss, _ = _run_export(big_project, "-o", str(tmp_path / "tiny.jsonl"), project="tiny")
    assert tiny.returncode == 0, tiny.stderr[-2000:]
    out = tmp_path / "items.jsonl"
    done, peak_rss, seconds = _run_export(big_project, "--format", "jsonl", "-o", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{ROWS} items written to {out}" in done.stderr
    size = out.stat().st_size
    with open(out, encoding="utf-8") as lines:
        count = 0
        first = json.loads(next(lines))
        count += 1
        for _ in lines:
            count += 1
    assert count == ROWS
    assert set(first) == {"url", "title", "n", "text", "out_links"}
    print(f"\njsonl export: {ROWS} items, {size / 2**20:.0f} MiB written in {seconds:.1f}s, "
          f"peak RSS {peak_rss / 2**20:.0f} MiB (10 items: {baseline_rss / 2**20:.0f} MiB)")
    # holding the items would take more than the file's size (Python objects take several
    # times more); streamed, the export's memory barely moves from the 10-item run's
    assert size > 100 * 2**20
    assert peak_rss - baseline_rss < 24 * 2**20, (peak_rss, baseline_rss)
    assert peak_rss < size, (peak_rss, size)

    out_csv = tmp_path / "items.csv"
    done, peak_rss_csv, seconds = _run_export(big_project, "-o", str(out_csv), "-q")
    assert done.returncode == 0, done.stderr[-2000:]
    with open(out_csv, encoding="utf-8", newline="") as rows:
        reader = csv.reader(rows)
        header = next(reader)
        assert sorted(header) == sorted(first)
        assert sum(1 for _ in reader) == ROWS
    print(f"csv export: {ROWS} items in {seconds:.1f}s, peak RSS {peak_rss_csv / 2**20:.0f} MiB")
    assert peak_rss_csv - baseline_rss < 24 * 2**20, (peak_rss_csv, baseline_rss)


def test_export_progress_bar_counts_items_to_the_total(pg: str, tmp_path: Path) -> None:
    engine = create_engine(pg)
    now = time.time()
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO projects (name, spider, status, settings, tasks_created, created_at, updated_at) "
            "VALUES ('small', 'x:Y', 'finished', '{}', 3, %s, %s)", (now, now))
        for n in range(2500):
            conn.exec_driver_sql(
                "INSERT INTO results (task_id, item_index, project, url, item, created_at, updated_at) "
                "VALUES (%s, 0, 'small', %s, %s, %s, %s)",
                (f"{n:032x}", f"http://s/{n}", json.dumps({"n": n}), now, now))
    engine.dispose()
    from click.testing import CliRunner

    from crawlcluster.cli import main

    out = tmp_path / "small.csv"
    result = CliRunner().invoke(main, ["results", "small", "-o", str(out)], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert "2500/2500" in result.output  # the bar's completed/total, on stderr
    assert "2500 items written" in result.output
    assert len(out.read_text().splitlines()) == 2501


def test_feed_sync_polls_new_rows_by_rowid_even_when_their_transaction_was_stamped_long_ago(sqlite_url,
                                                                                            tmp_path):
    """A store transaction that waited on SQLite's write lock stamps updated_at before it
    commits; its items must still reach the file at the next poll, not only at finish()."""
    import time as clock

    from crawlcluster.db import get_engine
    from crawlcluster.feeds import FeedSync, open_feed
    from crawlcluster.schema import results

    engine = get_engine(sqlite_url)

    def store(task_id: str, url: str, stamped: float) -> None:
        with engine.begin() as conn:
            conn.execute(results.insert(), [{"task_id": task_id, "item_index": 0, "project": "p", "url": url,
                                             "item": {"url": url}, "created_at": stamped,
                                             "updated_at": stamped}])

    out = tmp_path / "items.jsonl"
    sync = FeedSync(open_feed(str(out)), engine, "p")
    sync.start()
    store("a", "u1", clock.time())
    assert sync.poll() == 1
    store("b", "u2", clock.time() - 60)  # committed now, stamped a minute ago
    store("c", "u3", clock.time() - 3600)
    assert sync.poll() == 2
    assert [json.loads(line)["url"] for line in out.read_text(encoding="utf-8").splitlines()] == ["u1", "u2",
                                                                                                  "u3"]
    assert sync.finish() == 3


def test_results_and_export_take_the_formats_of_crawl_o_json_array_included(pg: str, tmp_path: Path) -> None:
    _insert_results(pg, 3, project="three")
    db.dispose_all()
    from click.testing import CliRunner

    from crawlcluster.cli import main
    from crawlcluster.client import Crawl

    env = {"CRAWLCLUSTER_DATABASE_URL": pg}
    out = tmp_path / "items.json"
    done = CliRunner().invoke(main, ["results", "three", "-o", str(out), "-q"], env=env)
    assert done.exit_code == 0, done.output
    items = json.loads(out.read_text(encoding="utf-8"))  # one JSON array, not JSON lines
    assert sorted(item["n"] for item in items) == [0, 1, 2]
    refused = CliRunner().invoke(main, ["results", "three", "-o", str(tmp_path / "items.txt"), "-q"], env=env)
    assert refused.exit_code == 2 and "cannot tell the output format" in refused.output
    assert not (tmp_path / "items.txt").exists()
    stdout = CliRunner().invoke(main, ["results", "three", "--format", "json", "-q"], env=env)
    assert stdout.exit_code == 0 and len(json.loads(stdout.stdout)) == 3
    buffer = io.StringIO()
    assert Crawl("three", database_url=pg).export(buffer, "json") == 3
    assert [item["n"] for item in json.loads(buffer.getvalue())] == sorted(item["n"] for item in items)


HOSTILE_CELLS = ["=HYPERLINK(\"http://evil.test\",\"x\")", "+1+1", "-2+3", "@SUM(A1)", "\tcmd", "\rcr",
                 "plain text", "a=b"]


def test_csv_export_quotes_formula_leading_cells_unless_asked_to_keep_them(pg: str, tmp_path: Path) -> None:
    engine = create_engine(pg)
    now = time.time()
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO projects (name, spider, status, settings, tasks_created, created_at, updated_at) "
            "VALUES ('formulas', 'x:Y', 'finished', '{}', 1, %s, %s)", (now, now))
        for n, text in enumerate(HOSTILE_CELLS):
            conn.exec_driver_sql(
                "INSERT INTO results (task_id, item_index, project, url, item, created_at, updated_at) "
                "VALUES (%s, 0, 'formulas', %s, %s, %s, %s)",
                (f"{n:032x}", f"http://s/{n}", json.dumps({"title": text, "n": -n}), now, now))
    engine.dispose()
    from click.testing import CliRunner

    from crawlcluster.cli import main
    from crawlcluster.client import Crawl

    escaped, verbatim = tmp_path / "escaped.csv", tmp_path / "verbatim.csv"
    assert CliRunner().invoke(main, ["results", "formulas", "-q", "-o", str(escaped)]).exit_code == 0
    result = CliRunner().invoke(main, ["results", "formulas", "-q", "--keep-formulas", "-o", str(verbatim)])
    assert result.exit_code == 0, result.output

    def titles(text: str) -> list[str]:
        return [row["title"] for row in csv.DictReader(io.StringIO(text, newline=""))]

    expected = ["'" + t if t[0] in "=+-@\t\r" else t for t in HOSTILE_CELLS]
    assert titles(escaped.read_bytes().decode()) == expected
    assert titles(verbatim.read_bytes().decode()) == HOSTILE_CELLS
    # the API takes the same choice; numbers stay numbers (-3 is a number, not a formula)
    out = io.StringIO()
    Crawl("formulas").export(out, "csv")
    assert titles(out.getvalue()) == expected
    rows = list(csv.DictReader(io.StringIO(out.getvalue(), newline="")))
    assert [row["n"] for row in rows] == [str(-n) for n in range(len(HOSTILE_CELLS))]
    out = io.StringIO()
    Crawl("formulas").export(out, "csv", keep_formulas=True)
    assert titles(out.getvalue()) == HOSTILE_CELLS
    print(f"CSV export: {sum(e != t for e, t in zip(expected, HOSTILE_CELLS))} of {len(HOSTILE_CELLS)} "
          "hostile cells quoted by default, all verbatim with --keep-formulas")
