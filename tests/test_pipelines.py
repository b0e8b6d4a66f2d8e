"""Item pipelines and end-of-crawl statistics, with real spiders on a local shop site.

A pipeline that drops the items without a price and enriches the others changes what is
stored, in an embedded crawl and in a cluster of real worker processes; Scrapy's documented
JSON-lines writer pattern runs unchanged and its file holds the items; a raising pipeline
fails its page's row readably. The end-of-crawl figures (responses by status, errors by
kind, items, dropped items by reason, off-site and duplicate links, bytes, elapsed time)
equal the rows and the site's own hit log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Any, Iterator

import httpx
import pytest
from sqlalchemy import create_engine, func, select

import crawlcluster
from crawlcluster import db
from crawlcluster.errors import ConfigurationError
from crawlcluster.messages import page_message
from crawlcluster.oneshot import end_of_crawl_lines
from crawlcluster.pipelines import pipeline_classes
from crawlcluster.schema import crawl_stats, crawl_tasks, results
from tests.pipeline_spiders import AsyncTagPipeline, JsonWriterPipeline, PricePipeline, ShopSpider
from tests.scripted_site import ScriptedSite, page
from workers.parser import process_pages
from workers.pipelines import close_pipelines, run_pipelines

PRODUCTS = {1: 10.0, 2: 20.0, 3: None, 4: 40.0, 5: 50.0, 6: None}  # 3 and 6 have no price
TAX = 1.2  # ShopSpider's custom_settings PRICE_TAX, read by PricePipeline.from_crawler


def _product(n: int, price: float | None) -> tuple[int, dict[str, str], bytes]:
    span = f'<span class="price">{price}</span>' if price is not None else "<span>ask us</span>"
    links = f'<a href="/">home</a><a href="/p/{n % len(PRODUCTS) + 1}">next</a>'
    body = f"<html><head><title>Product {n}</title></head><body>{span}{links}</body></html>"
    return 200, {"Content-Type": "text/html; charset=utf-8"}, body.encode()


@pytest.fixture
def shop() -> Iterator[ScriptedSite]:
    """``/`` links to six products, a missing page (404) and a page on another host; each
    product links home and to the next product (links already known: duplicates)."""
    site = ScriptedSite()
    port = site.url.rsplit(":", 1)[1]
    home = (*[f"/p/{n}" for n in PRODUCTS], "/missing", f"http://localhost:{port}/elsewhere")
    site.route("/", lambda _n, _h: page("Shop", home))
    for n, price in PRODUCTS.items():
        site.route(f"/p/{n}", lambda _n, _h, n=n, price=price: _product(n, price))
    yield site
    site.stop()


def _expected_items(site: ScriptedSite, tag: str = "shop") -> dict[str, dict[str, Any]]:
    return {f"{site.url}/p/{n}": {"url": f"{site.url}/p/{n}", "name": f"Product {n}", "price": price,
                                  "price_with_tax": round(price * TAX, 2), "tag": tag}
            for n, price in PRODUCTS.items() if price is not None}


def _stored(database_url: str, project: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    engine = create_engine(database_url)
    with engine.connect() as conn:
        stmt = select(crawl_tasks).where(crawl_tasks.c.project == project)
        rows = [dict(r._mapping) for r in conn.execute(stmt)]
        items = [r.item for r in conn.execute(select(results.c.item).where(results.c.project == project))]
        nbytes = conn.execute(select(func.sum(crawl_stats.c.bytes))
                              .where(crawl_stats.c.project == project)).scalar() or 0
    engine.dispose()
    return rows, items, int(nbytes)


def _assert_figures_match(stats: dict[str, Any], site: ScriptedSite, rows: list[dict[str, Any]],
                          items: list[dict[str, Any]], nbytes: int) -> None:
    """The end-of-crawl figures equal the rows and the site's hit log."""
    served: dict[str, int] = {}
    for path, count in site.counts.items():
        code = "200" if path.split("?")[0] in site.routes else "404"
        served[code] = served.get(code, 0) + count
    assert stats["status_codes"] == served, (stats["status_codes"], dict(site.counts))
    failed: dict[str, int] = {}
    for row in rows:
        if row["status"] == "failed" and row["callback"] != "__robots__":
            label = f"HTTP {row['status_code']}" if row["error_kind"] == "http" else row["error_kind"]
            failed[label] = failed.get(label, 0) + 1
    assert stats["error_kinds"] == failed
    assert stats["items_scraped"] == len(items) == stats["items"]
    dropped = sum(1 for price in PRODUCTS.values() if price is None)
    assert stats["items_dropped"] == dropped and stats["dropped_reasons"] == {"no price": dropped}
    # each page fetched once: the home page's one off-site link, and every on-site link that
    # was already known (all but the rows the links created)
    assert all(n == 1 for n in site.counts.values()), dict(site.counts)
    assert stats["links_offsite"] == 1
    onsite_links = (len(PRODUCTS) + 1) + 2 * len(PRODUCTS)
    link_rows = [r for r in rows if r["depth"] > 0]
    assert stats["links_duplicate"] == onsite_links - len(link_rows)
    assert stats["bytes"] == nbytes > 0
    assert stats["elapsed_seconds"] > 0


def test_pipelines_drop_and_enrich_what_an_embedded_crawl_stores_and_the_jsonl_writer_runs_unchanged(
        shop, tmp_path, monkeypatch):
    from crawlcluster.embedded import run_embedded
    from crawlcluster.oneshot import console, print_summary

    monkeypatch.chdir(tmp_path)  # JsonWriterPipeline writes items.jsonl in the current directory
    database = tmp_path / "shop.db"
    result = run_embedded("tests.pipeline_spiders:ShopSpider", project="shop", database_path=str(database),
                          progress=False, timeout_seconds=60, spider_kwargs={"base_url": shop.url})
    rows, items, nbytes = _stored(f"sqlite:///{database}", "shop")
    expected = _expected_items(shop)
    stored = {item["url"]: {k: v for k, v in item.items() if k != "enriched_by"} for item in items}
    assert stored == expected
    assert {item["enriched_by"] for item in items} == {os.getpid()}  # the embedded worker's threads
    # close_spider ran when the embedded crawl ended: the file is complete
    written = [json.loads(line) for line in (tmp_path / "items.jsonl").read_text().splitlines()]
    assert sorted(w["url"] for w in written) == sorted(expected)
    assert all(w["price_with_tax"] == expected[w["url"]]["price_with_tax"] for w in written)
    _assert_figures_match(result.stats, shop, rows, items, nbytes)
    with console.capture() as captured:
        print_summary(result, None, str(database))
    out = captured.get()
    print(out)
    assert "items dropped by pipelines: 2 (no price 2)" in out
    assert f"links filtered: 1 off-site, {result.stats['links_duplicate']} duplicate" in out
    assert end_of_crawl_lines(result.stats)[0] == "responses by status: " + ", ".join(
        f"{code} {count}" for code, count in sorted(result.stats["status_codes"].items()))
    # `crawlcluster status shop --json` shows the same figures
    env = {**os.environ, "CRAWLCLUSTER_DATABASE_URL": f"sqlite:///{database}",
           "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    status = subprocess.run([sys.executable, "-m", "crawlcluster.cli", "status", "shop", "--json"],
                            env=env, capture_output=True, text=True, check=True, timeout=60)
    shown = json.loads(status.stdout)
    for name in ("status_codes", "error_kinds", "items_scraped", "items_dropped", "dropped_reasons",
                 "links_offsite", "links_duplicate", "bytes"):
        assert shown["shop"][name] == result.stats[name], name


def test_pipelines_run_in_the_parse_workers_of_a_cluster_and_a_raising_one_fails_its_row(
        shop, processes, pg, tmp_path):
    processes.worker("fetch", "fetch")
    parse = processes.worker("parse", "parse", "-c", "1")  # one process: one items.jsonl writer
    processes.worker("store", "store")
    processes.beat()
    crawl = crawlcluster.submit("tests.pipeline_spiders:ShopSpider", project="shop",
                                spider_kwargs={"base_url": shop.url})
    stats = crawl.wait(timeout=120)
    rows, items, nbytes = _stored(pg, "shop")
    expected = _expected_items(shop)
    assert {i["url"]: {k: v for k, v in i.items() if k != "enriched_by"} for i in items} == expected
    worker_pids = set(processes.pids("parse")) - {parse.pid}
    assert {item["enriched_by"] for item in items} <= worker_pids  # the parse worker's pool process
    _assert_figures_match(stats, shop, rows, items, nbytes)
    # a warm shutdown of the parse worker closes its pipelines: the JSON-lines file is complete
    os.kill(parse.pid, signal.SIGTERM)
    parse.wait(timeout=30)
    written = [json.loads(line) for line in (tmp_path / "items.jsonl").read_text().splitlines()]
    assert sorted(w["url"] for w in written) == sorted(expected)

    # a pipeline that raises on one product fails that page's row, kind pipeline, with its line
    processes.worker("parse-2", "parse")
    shop.counts.clear()
    boom = crawlcluster.submit("tests.pipeline_spiders:ExplodingShopSpider", project="boom",
                               spider_kwargs={"base_url": shop.url})
    boom_stats = boom.wait(timeout=120)
    rows, items, _ = _stored(pg, "boom")
    failed = {r["url"]: r for r in rows if r["status"] == "failed" and r["error_kind"] == "pipeline"}
    assert list(failed) == [f"{shop.url}/p/5"]
    error = failed[f"{shop.url}/p/5"]["error"]
    assert error.startswith("pipeline ExplodingPipeline.process_item raised ValueError: cannot handle "
                            "product 5 ("), error
    assert "pipeline_spiders.py:" in error
    assert boom_stats["error_kinds"]["pipeline"] == 1
    # the other products are stored as the callback yielded them (no PricePipeline here)
    assert sorted(i["url"] for i in items) == sorted(f"{shop.url}/p/{n}" for n in PRODUCTS if n != 5)
    assert "ExplodingPipeline.process_item" in processes.log("parse-2")  # its traceback, in the log


def test_pipeline_order_scrapy_paths_and_the_allow_list():
    class Ordered(ShopSpider):
        pipelines = [AsyncTagPipeline]
        custom_settings = {"ITEM_PIPELINES": {
            "tests.pipeline_spiders.JsonWriterPipeline": 900,  # Scrapy's dotted form
            "tests.pipeline_spiders:PricePipeline": 100,
            "tests.pipeline_spiders.AsyncTagPipeline": 50,  # already listed: runs once, first
        }}

    assert pipeline_classes(Ordered, ("tests",)) == [AsyncTagPipeline, PricePipeline, JsonWriterPipeline]

    class Off(ShopSpider):
        custom_settings = {"ITEM_PIPELINES": {"tests.pipeline_spiders.JsonWriterPipeline": None}}

    assert pipeline_classes(Off, ("tests",)) == [PricePipeline, AsyncTagPipeline]
    with pytest.raises(ConfigurationError, match="outside CRAWLCLUSTER_SPIDER_PACKAGES"):
        pipeline_classes(ShopSpider, ("crawlcluster",))

    class BadOrder(ShopSpider):
        custom_settings = {"ITEM_PIPELINES": {"tests.pipeline_spiders.JsonWriterPipeline": "high"}}

    with pytest.raises(ConfigurationError, match="order number"):
        pipeline_classes(BadOrder, ("tests",))


class _Recorded:
    """Records its life, for the unit test below."""

    events: list[str] = []

    def __init__(self, factor: int) -> None:
        self.factor = factor

    @classmethod
    def from_settings(cls, settings):
        return cls(settings.getint("FACTOR"))

    def open_spider(self, spider):
        self.events.append(f"open {spider.name}")

    def close_spider(self, spider):
        self.events.append(f"close {spider.name}")

    def process_item(self, item, spider):
        if item.get("n") == 0:
            return None  # a forgotten return
        return {**item, "n": item["n"] * self.factor}


class _OpensBadly:
    def open_spider(self, spider):
        raise OSError("disk full")


def test_from_settings_open_close_and_a_pipeline_that_returns_nothing():
    class Recording(ShopSpider):
        name = "recording"
        pipelines = [_Recorded]
        custom_settings = {"FACTOR": 2}

    spider = Recording()
    _Recorded.events.clear()
    first = run_pipelines("rec", 1.0, spider, {"FACTOR": 3}, [{"n": 1}, {"n": 2}])
    assert first.items == [{"n": 3}, {"n": 6}] and first.error is None  # the project's setting wins
    again = run_pipelines("rec", 1.0, spider, {}, [{"n": 5}])
    assert again.items == [{"n": 15}] and _Recorded.events == ["open recording"]  # opened once
    forgot = run_pipelines("rec", 1.0, spider, {}, [{"n": 0}])
    assert forgot.error == ("pipeline _Recorded.process_item returned None; return the item (changed or "
                            "not) or raise DropItem")
    run_pipelines("rec", 2.0, spider, {}, [{"n": 1}])  # the project re-created: closed, opened again
    assert _Recorded.events == ["open recording", "close recording", "open recording"]

    class Broken(ShopSpider):
        pipelines = [_Recorded, _OpensBadly]

    broken = run_pipelines("broken", 1.0, Broken(), {"FACTOR": 1}, [{"n": 1}])
    assert broken.error is not None
    assert broken.error.startswith("pipeline _OpensBadly.open_spider raised OSError: disk full ("), \
        broken.error
    assert close_pipelines() == 1  # "rec"; the broken chain was closed when it failed to open
    assert _Recorded.events[-3:] == ["open shop", "close shop", "close recording"]


def _fetched(site: ScriptedSite, engine, project: str, path: str) -> Any:
    """A page message for ``path`` as the fetch stage would send it, from a real request."""
    url = site.url + path
    answer = httpx.get(url)
    with engine.connect() as conn:
        task_id = conn.execute(select(crawl_tasks.c.task_id).where(crawl_tasks.c.project == project,
                                                                   crawl_tasks.c.url == url)).scalar()
    return page_message({"id": task_id or f"t{path}", "url": url}, answer.status_code,
                        {"content-type": answer.headers["content-type"]}, answer.content, seconds=0.01,
                        wire_bytes=len(answer.content))


def test_the_parse_engine_runs_pipelines_and_a_forbidden_pipeline_pauses_the_project(shop, sqlite_url):
    engine = db.get_engine(sqlite_url)
    crawlcluster.submit("tests.pipeline_spiders:ExplodingShopSpider", project="unit", database_url=sqlite_url,
                        spider_kwargs={"base_url": shop.url})
    pages = [_fetched(shop, engine, "unit", path) for path in ("/p/4", "/p/5")]
    outcomes, _added, _dropped = process_pages(engine, "unit", pages)
    by_url = {o["url"]: o for o in outcomes}
    assert by_url[shop.url + "/p/4"]["status"] == "done"
    assert by_url[shop.url + "/p/4"]["items"] == [
        {"url": shop.url + "/p/4", "name": "Product 4", "price": 40.0}]
    boom = by_url[shop.url + "/p/5"]
    assert (boom["status"], boom["kind"]) == ("failed", "pipeline") and "items" not in boom
    assert "cannot handle product 5" in boom["error"]

    crawlcluster.submit("tests.pipeline_spiders:ForbiddenPipelineSpider", project="forbidden",
                        database_url=sqlite_url, spider_kwargs={"base_url": shop.url})
    outcomes, _added, _dropped = process_pages(engine, "forbidden",
                                               [_fetched(shop, engine, "forbidden", "/")])
    assert outcomes[0]["status"] == "failed"
    assert "pipeline 'json.decoder:JSONDecoder' is outside CRAWLCLUSTER_SPIDER_PACKAGES" \
        in outcomes[0]["error"]
    stats = crawlcluster.Crawl("forbidden", database_url=sqlite_url).stats(figures=False)
    assert stats["status"] == "paused" and "JSONDecoder" in stats["pause_reason"]  # paused once, readably
