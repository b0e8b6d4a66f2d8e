"""Feeds as Scrapy users expect them (issue 18): every output format round-trips (read back with
the standard library or pyarrow and compared with the rows in the database), through the
crawl's live feed and through the export; ``-o`` appends where the format can (JSON lines,
CSV without a second header) and refuses the rest naming ``-O``; ``-O`` overwrites; an
unknown extension is refused before any request reaches the site; items yielded as
dataclasses, attrs classes or pydantic models arrive as plain dicts.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Callable

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, select

from crawlcluster.cli import main
from crawlcluster.feeds import FeedSync, feed_format, open_feed, write_all
from crawlcluster.http import Response
from crawlcluster.schema import projects, results
from tests import feed_spiders
from tests.scripted_site import ScriptedSite, page
from workers.callbacks import run_callback

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "crawlcluster.cli"]
NAMES = ["items.jsonl", "items.json", "items.csv", "items.xml", "items.parquet",
         "items.jl.gz", "items.json.gz", "items.csv.gz", "items.xml.gz", "items.parquet.gz"]
PAGE_A = [{"url": "http://s/1", "title": "Über <b> & \"q\"", "n": 1, "tags": ["x", "y"]},
          {"url": "http://s/2", "title": "two,\nlines", "n": 2, "tags": ["z"]}]
# a later page brings new keys (a CSV header that grows) and nested values
PAGE_B = [{"url": "http://s/3", "title": "three", "n": 3, "price": 2.5, "ok": True,
           "meta": {"a": 1, "b": [1, 2]}}]


def _store(engine: Any, task_id: str, items: list[dict[str, Any]], project: str = "p") -> None:
    """A page's items as the store stage writes them, in one transaction."""
    now = time.time()
    with engine.begin() as conn:
        conn.execute(results.delete().where(results.c.task_id == task_id))
        conn.execute(results.insert(), [{"task_id": task_id, "item_index": i, "project": project,
                                         "url": item["url"], "item": item, "created_at": now,
                                         "updated_at": now} for i, item in enumerate(items)])


def _add_project(engine: Any, name: str = "p") -> None:
    now = time.time()
    with engine.begin() as conn:
        conn.execute(projects.insert(), [{"name": name, "spider": "crawlcluster.spider:LinkSpider",
                                          "status": "finished", "settings": {}, "tasks_created": 0,
                                          "created_at": now, "updated_at": now}])


def _stored(database_url: str, project: str = "p") -> list[dict[str, Any]]:
    engine = create_engine(database_url)
    with engine.connect() as conn:
        rows = [item for (item,) in conn.execute(select(results.c.item).where(results.c.project == project)
                                                 .order_by(results.c.task_id, results.c.item_index))]
    engine.dispose()
    return rows


def _xml_value(element: ET.Element) -> Any:
    children = list(element)
    if not children:
        return element.text
    if all(child.tag == "value" for child in children):
        return [_xml_value(child) for child in children]
    return {child.tag: _xml_value(child) for child in children}


def read_back(path: Path) -> list[dict[str, Any]]:
    """The items of ``path``, read with the standard library (gzip, json, csv, xml.etree) or
    pyarrow, as each format holds them."""
    fmt = feed_format(str(path))
    compressed = path.name.endswith(".gz")
    if fmt == "parquet":
        data = gzip.decompress(path.read_bytes()) if compressed else path.read_bytes()
        return pq.read_table(io.BytesIO(data)).to_pylist()
    opener: Callable[..., Any] = gzip.open if compressed else open
    with opener(path, "rt", encoding="utf-8", newline="") as handle:
        if fmt == "jsonl":
            return [json.loads(line) for line in handle if line.strip()]
        if fmt == "json":
            return json.load(handle)
        if fmt == "csv":
            return list(csv.DictReader(handle))
        root = ET.parse(handle).getroot()
    assert root.tag == "items" and {child.tag for child in root} <= {"item"}
    return [_xml_value(child) for child in root]


def _text(value: Any) -> Any:
    """A value as the XML feed writes it (Scrapy's shape: Python's text of a scalar)."""
    if isinstance(value, dict):
        return {key: _text(v) for key, v in value.items()}
    if isinstance(value, list):
        return [_text(v) for v in value]
    return None if value is None else str(value)


def as_written(items: list[dict[str, Any]], fmt: str) -> list[dict[str, Any]]:
    """What the database's items look like in ``fmt``: CSV cells are text (nested values
    JSON, a missing key empty), XML fields text, Parquet has a column for every key (null
    where missing) and an object's JSON text."""
    columns = list(dict.fromkeys(key for item in items for key in item))
    if fmt == "csv":
        def cell(value: Any) -> str:
            if value is None:
                return ""
            return json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else str(value)
        return [{column: cell(item.get(column)) for column in columns} for item in items]
    if fmt == "xml":
        return [_text(item) for item in items]
    if fmt == "parquet":
        def kind(value: Any) -> str:
            return "number" if type(value) in (int, float) else type(value).__name__
        kinds = {column: {kind(item[column]) for item in items if item.get(column) is not None}
                 for column in columns}
        as_json = {column for column, seen in kinds.items() if len(seen) > 1 or "dict" in seen}
        return [{column: json.dumps(item[column], ensure_ascii=False)
                 if column in as_json and item.get(column) is not None else item.get(column)
                 for column in columns} for item in items]
    return items


def _sorted(items: list[dict[str, Any]]) -> list[str]:
    return sorted(json.dumps(item, sort_keys=True, ensure_ascii=False) for item in items)


@pytest.mark.parametrize("name", NAMES)
def test_each_format_round_trips_through_the_live_feed_and_the_export(sqlite_url: str, tmp_path: Path,
                                                                      name: str) -> None:
    from crawlcluster.db import get_engine

    engine = get_engine(sqlite_url)
    fmt = feed_format(name)
    live = tmp_path / name
    sync = FeedSync(open_feed(str(live)), engine, "p")
    sync.start()
    _store(engine, "a", PAGE_A)
    sync.poll()
    _store(engine, "b", PAGE_B)
    sync.poll()
    assert sync.finish() == 3
    stored = _stored(sqlite_url)
    assert len(stored) == 3
    assert _sorted(read_back(live)) == _sorted(as_written(stored, fmt))

    exported = tmp_path / f"export-{name}"
    assert write_all(open_feed(str(exported)), lambda: iter(_stored(sqlite_url))) == 3
    assert _sorted(read_back(exported)) == _sorted(as_written(stored, fmt))
    if name.endswith(".gz"):
        assert live.read_bytes()[:2] == b"\x1f\x8b"  # gzip's magic number
    assert not list(tmp_path.glob(".crawlcluster-*"))  # no temporary file left beside them


def _results(sqlite_url: str, *args: str) -> Any:
    return CliRunner().invoke(main, ["results", "p", "-q", *args],
                              env={"CRAWLCLUSTER_DATABASE_URL": sqlite_url})


def test_results_o_appends_to_jsonl_and_csv_without_a_second_header_and_O_overwrites(sqlite_url: str,
                                                                                    tmp_path: Path) -> None:
    from crawlcluster.db import get_engine

    engine = get_engine(sqlite_url)
    _add_project(engine)
    _store(engine, "a", PAGE_A)
    lines, table = tmp_path / "items.jsonl", tmp_path / "items.csv.gz"
    for _ in range(2):
        for path in (lines, table):
            done = _results(sqlite_url, "-o", str(path))
            assert done.exit_code == 0, done.output
    assert _sorted(read_back(lines)) == _sorted(PAGE_A * 2)
    with gzip.open(table, "rt", encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["url", "title", "n", "tags"] and rows.count(rows[0]) == 1  # one header
    assert _sorted(read_back(table)) == _sorted(as_written(PAGE_A, "csv") * 2)

    # the project gains an item with keys the file's header lacks: the header widens and
    # the rows the file held are kept, as they were
    _store(engine, "b", PAGE_B)
    done = _results(sqlite_url, "-o", str(table))
    assert done.exit_code == 0, done.output
    with gzip.open(table, "rt", encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        widened = list(reader)
        assert reader.fieldnames == ["url", "title", "n", "tags", "price", "ok", "meta"]
    assert len(widened) == 2 + 2 + 3
    earlier = [{**row, "price": "", "ok": "", "meta": ""} for row in as_written(PAGE_A, "csv")]
    assert widened[:4] == earlier * 2
    assert _sorted(widened[4:]) == _sorted(as_written(PAGE_A + PAGE_B, "csv"))

    for path in (lines, table):
        done = _results(sqlite_url, "-O", str(path))
        assert done.exit_code == 0, done.output
        assert _sorted(read_back(path)) == _sorted(as_written(_stored(sqlite_url), feed_format(str(path))))
    assert not list(tmp_path.glob(".crawlcluster-*"))


@pytest.mark.parametrize("name", ["items.json", "items.xml.gz", "items.parquet"])
def test_a_whole_document_is_not_appended_to_o_says_O_and_O_overwrites_it(sqlite_url: str, tmp_path: Path,
                                                                          name: str) -> None:
    from crawlcluster.db import get_engine

    engine = get_engine(sqlite_url)
    _add_project(engine)
    _store(engine, "a", PAGE_A)
    path = tmp_path / name
    assert _results(sqlite_url, "-o", str(path)).exit_code == 0  # a new file: -o writes it
    before = path.read_bytes()
    refused = _results(sqlite_url, "-o", str(path))
    assert refused.exit_code == 2, refused.output
    assert f"-O {path} overwrites it" in refused.output and len(refused.output.strip().splitlines()) == 1
    assert path.read_bytes() == before
    _store(engine, "b", PAGE_B)
    done = _results(sqlite_url, "-O", str(path))
    assert done.exit_code == 0, done.output
    assert _sorted(read_back(path)) == _sorted(as_written(_stored(sqlite_url), feed_format(name)))
    both = _results(sqlite_url, "-o", str(path), "-O", str(path))
    assert both.exit_code == 2 and "not both" in both.output


def _env(site_url: str = "") -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["CLI_TEST_SITE"] = site_url
    return env


@pytest.mark.parametrize("args, needle", [
    (["-o", "items.txt"], ".jsonl .jl .ndjson .json .csv .xml .parquet (add .gz to compress)"),
    (["-o", "items.csv.bz2"], "cannot tell the output format of 'items.csv.bz2'"),
    (["-o", "old.json"], "-O old.json overwrites it"),
    (["-o", "a.jsonl", "-O", "b.jsonl"], "not both"),
])
def test_an_output_crawl_o_cannot_write_exits_2_before_any_request(tmp_path: Path, args: list[str],
                                                                   needle: str) -> None:
    (tmp_path / "old.json").write_text("[]\n")
    site = ScriptedSite()
    try:
        site.route("/", lambda n, h: page("Home"))
        run = subprocess.run([*CLI, "crawl", site.url + "/", *args, "-q", "--db", str(tmp_path / "f.db")],
                             capture_output=True, text=True, timeout=120, env=_env(), cwd=tmp_path)
        assert run.returncode == 2, run.stderr
        assert needle in run.stderr and "Traceback" not in run.stderr
        if "not both" not in needle:  # click's usage errors come with a usage line
            assert len(run.stderr.strip().splitlines()) == 1, run.stderr
        assert site.counts == {}  # the site's hit log is empty: no request was made
        assert not (tmp_path / "f.db").exists()
    finally:
        site.stop()


def _response(url: str, title: str) -> Response:
    body = f"<html><head><title>{title}</title></head><body></body></html>".encode()
    return Response(url, 200, {"content-type": "text/html; charset=utf-8"}, body)


def test_dataclass_attrs_and_pydantic_items_leave_the_callback_as_plain_dicts() -> None:
    spider = feed_spiders.TypedItemsSpider()
    outcome = run_callback(spider, "parse", _response("http://site.test/t/1", "One"))
    assert outcome.error is None, outcome.error
    assert all(type(item) is dict for item in outcome.items)
    book = {"url": "http://site.test/t/1", "title": "One", "price": 10.5, "tags": ["novel", "1"]}
    assert outcome.items == [
        book,
        {"url": "http://site.test/t/1", "name": "Author 1", "born": 1901, "book": book},
        {"url": "http://site.test/t/1", "stars": 1, "when": "2024-01-02", "price": "1.50"},
        {"url": "http://site.test/t/1", "kind": "dict", "page": 1},
    ]
    assert json.loads(json.dumps(outcome.items)) == outcome.items


def test_a_returned_mapping_that_is_not_a_dict_as_scrapy_items_are_arrives_as_a_dict() -> None:
    outcome = run_callback(feed_spiders.MappingSpider(), "parse", _response("http://site.test/m", "M"))
    assert outcome.error is None, outcome.error
    assert outcome.items == [{"url": "http://site.test/m", "title": "M", "nested": {"depth": 0}}]
    assert type(outcome.items[0]) is dict and type(outcome.items[0]["nested"]) is dict


def test_a_value_json_cannot_hold_fails_the_page_naming_the_field_its_type_and_the_yield_line() -> None:
    outcome = run_callback(feed_spiders.DecimalSpider(), "parse", _response("http://site.test/d", "D"))
    assert outcome.items == [] and outcome.error is not None
    assert "DecimalSpider.parse raised ItemError: field 'offer.price' holds a value of type Decimal" \
        in outcome.error, outcome.error
    yield_line = next(n for n, line in enumerate(Path(feed_spiders.__file__).read_text().splitlines(), 1)
                      if "decimal.Decimal(\"2.50\")" in line)
    assert outcome.error.endswith(f"({feed_spiders.__file__}:{yield_line})"), outcome.error


def test_a_crawl_of_typed_items_appends_to_a_csv_under_its_header_and_O_writes_every_item_as_parquet(
        tmp_path: Path) -> None:
    """The one end-to-end run: items of four kinds stored as dicts, appended to a CSV that
    already holds a row (its header widened, that row kept first); then the same --db run
    again with -O into Parquet: nothing fetched again, every item written."""
    site = ScriptedSite()
    try:
        for number in range(feed_spiders.PAGES):
            site.route(f"/t/{number}", lambda n, h, number=number: page(f"T{number}"))
        out, db = tmp_path / "items.csv", tmp_path / "crawl.db"
        out.write_text("url,title\r\nhttp://old.test/,Old\r\n", encoding="utf-8")
        started = time.monotonic()
        run = subprocess.run([*CLI, "crawl", "tests.feed_spiders:TypedItemsSpider", "-o", str(out), "-q",
                              "--ignore-robots", "--db", str(db)], capture_output=True, text=True,
                             timeout=120, env=_env(site.url), cwd=tmp_path)
        assert run.returncode == 0, run.stderr[-3000:]
        print(f"embedded crawl of {feed_spiders.PAGES} pages into a CSV: {time.monotonic() - started:.1f}s")
        stored = _stored(f"sqlite:///{db}", "typed")
        assert len(stored) == 4 * feed_spiders.PAGES
        reviews = [item for item in stored if "stars" in item]
        assert sorted(item["when"] for item in reviews) == ["2024-01-01", "2024-01-02", "2024-01-03"]
        assert all(item["book"]["tags"][0] == "novel" for item in stored if "born" in item)
        with out.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
            header = reader.fieldnames or []
        assert header[:2] == ["url", "title"] and len(header) == len(set(header))
        assert set(header) == {key for item in stored for key in item}
        assert rows[0] == {column: "" for column in header} | {"url": "http://old.test/", "title": "Old"}
        assert _sorted(rows[1:]) == _sorted(as_written(stored, "csv"))
        assert dict(site.counts) == {f"/t/{number}": 1 for number in range(feed_spiders.PAGES)}

        table = tmp_path / "items.parquet"
        again = subprocess.run([*CLI, "crawl", "tests.feed_spiders:TypedItemsSpider", "-O", str(table), "-q",
                                "--ignore-robots", "--db", str(db)], capture_output=True, text=True,
                               timeout=120, env=_env(site.url), cwd=tmp_path)
        assert again.returncode == 0, again.stderr[-3000:]
        assert _sorted(read_back(table)) == _sorted(as_written(stored, "parquet"))
        assert dict(site.counts) == {f"/t/{number}": 1 for number in range(feed_spiders.PAGES)}
    finally:
        site.stop()
