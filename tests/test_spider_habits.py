"""Scrapy users' habits on real spiders and a local site: class attributes and custom_settings
change what is fetched (robots.txt ignored, a per-host delay in the server's own hit gaps, a
user agent and default headers), `-a` reaches the spider and `-s` changes a setting, `crawlcluster
crawl file.py` runs the one spider of a file, and a callback uses response.json/meta/request,
xpath and css ::text with self.logger lines naming project and URL. Embedded crawls, plus one
submit to Postgres for what a cluster's project keeps."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from crawlcluster import Request, Spider
from crawlcluster.embedded import run_embedded
from crawlcluster.errors import ConfigurationError
from crawlcluster.spider_settings import parse_assignments, setting_warnings
from tests import habit_spiders
from tests.scripted_site import ScriptedSite, page

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "crawlcluster.cli"]
ROBOTS = (200, {"Content-Type": "text/plain"}, b"User-agent: *\nDisallow: /secret\n")


@pytest.fixture
def site() -> Iterator[ScriptedSite]:
    served = ScriptedSite()
    served.route("/robots.txt", lambda _n, _h: ROBOTS)
    served.route("/secret", lambda _n, _h: page("Secret"))
    for n in range(4):
        served.route(f"/slow/{n}", lambda _n, _h, n=n: page(f"Slow {n}"))
    yield served
    served.stop()


def _crawl(spider: type[Spider], site: ScriptedSite, tmp_path: Path, **kwargs: Any) -> Any:
    return run_embedded(spider, database_path=str(tmp_path / f"{spider.name}.db"), progress=False,
                        timeout_seconds=60, spider_kwargs={"site": site.url}, **kwargs)


def _paths(site: ScriptedSite) -> list[str]:
    return [path for _t, path, _h in site.log]


@pytest.mark.parametrize("spider", [habit_spiders.IgnoresRobotsByAttribute,
                                    habit_spiders.IgnoresRobotsByCustomSettings])
def test_a_spider_that_ignores_robots_fetches_a_disallowed_page(spider, site, tmp_path):
    result = _crawl(spider, site, tmp_path)
    assert result.pages["done"] == 1 and result.stats["items"] == 1
    assert _paths(site) == ["/secret"]  # robots.txt not even asked


def test_a_per_host_delay_on_the_class_spaces_the_servers_hits(site, tmp_path):
    result = _crawl(habit_spiders.SlowOnOneHost, site, tmp_path)
    assert result.pages["done"] == 4
    times = [t for t, path, _h in site.log if path.startswith("/slow/")]
    gaps = [b - a for a, b in zip(times, times[1:])]
    print(f"gaps between hits with per_host_delay = 0.4: {[round(g, 3) for g in gaps]}")
    assert len(times) == 4 and min(gaps) >= 0.4


def test_a_callback_uses_meta_json_request_xpath_css_text_and_self_logger(tmp_path, caplog):
    served = ScriptedSite()
    listing = (b"<html><head><title>Books</title></head><body><h1>All books</h1><ul>"
               b"<li class='book'><a href='/api/1'>Dune</a></li>"
               b"<li class='book'><a href='/api/2'>Emma</a></li>"
               b"</ul></body></html>")
    served.route("/books", lambda _n, _h: (200, {"Content-Type": "text/html; charset=utf-8"}, listing))
    for n, title in ((1, "Dune"), (2, "Emma")):
        body = json.dumps({"id": n, "title": title}).encode()
        served.route(f"/api/{n}", lambda _n, _h, body=body: (200, {"Content-Type": "application/json"}, body))
    output = tmp_path / "items.jsonl"
    try:
        with caplog.at_level(logging.INFO, logger="habits"):
            result = run_embedded(habit_spiders.HabitsSpider, database_path=str(tmp_path / "h.db"),
                                  output=str(output), progress=False, timeout_seconds=60,
                                  spider_kwargs={"site": served.url})
        assert result.pages["done"] == 3, result.failures
        items = [json.loads(line) for line in output.read_text().splitlines()]
        [listing_item] = [i for i in items if i["kind"] == "listing"]
        assert listing_item["shelf"] == "top" and listing_item["heading"] == "All books"
        assert listing_item["titles"] == ["Dune", "Emma"] and listing_item["hrefs"] == ["/api/1", "/api/2"]
        assert listing_item["first_book_html"] == '<li class="book"><a href="/api/1">Dune</a></li>'
        assert listing_item["request"] == [served.url + "/books", "parse", {"shelf": "top"}, "top"]
        books = sorted((i for i in items if i["kind"] == "book"), key=lambda i: i["id"])
        assert books == [{"kind": "book", "id": n, "title": t, "from": served.url + "/books",
                          "callback": "parse_api"} for n, t in ((1, "Dune"), (2, "Emma"))]
        # the user agent and default headers of custom_settings reached every fetch
        for _t, path, headers in served.log:
            assert headers["user-agent"] == "habits-bot/1.0" and headers["accept-language"] == "fr", path
        assert served.hits("/books")[0][1]["x-shelf"] == "top"
        lines = [r for r in caplog.records if r.name == "habits"]
        assert {(r.project, r.url) for r in lines} == {("habits", served.url + path)
                                                       for path in ("/books", "/api/1", "/api/2")}
        messages = [r.getMessage() for r in lines]
        assert f"project habits, url {served.url}/books: listing has 2 books" in messages
    finally:
        served.stop()


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    env.pop("CRAWLCLUSTER_SPIDER_PACKAGES", None)
    return subprocess.run([*CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


SPIDER_FILE = '''
from crawlcluster import Request, Spider


class CategorySpider(Spider):
    name = "category"
    per_host_delays = 1.0   # a typo: warned, not read

    def start(self):
        yield Request(f"{self.site}/secret", data={"category": self.category})

    def parse(self, response):
        yield {"category": self.category, "url": response.url}
'''


def test_crawl_runs_the_spider_of_a_file_with_a_and_s(site, tmp_path):
    folder = tmp_path / "spiders"
    folder.mkdir()
    (folder / "category_spider.py").write_text(SPIDER_FILE)
    done = _cli("crawl", "spiders/category_spider.py", "-a", f"site={site.url}", "-a", "category=books",
                "-s", "ROBOTSTXT_OBEY=False", "-q", "-o", "out.jsonl", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()] == [
        {"category": "books", "url": site.url + "/secret"}]
    assert _paths(site) == ["/secret"]  # -s ROBOTSTXT_OBEY=False: robots.txt not asked
    assert "CategorySpider.per_host_delays is not a crawlcluster setting and is not read; did you mean " \
           "per_host_delay?" in done.stderr
    # several spiders in one file: refused, naming them; an unknown -s: refused with the list
    (folder / "two.py").write_text(SPIDER_FILE + "\n\nclass Other(CategorySpider):\n    name = 'other'\n")
    two = _cli("crawl", "spiders/two.py", cwd=tmp_path)
    assert two.returncode == 2 and "defines several spiders (CategorySpider, Other)" in two.stderr
    unknown = _cli("crawl", "spiders/category_spider.py", "-s", "AUTOTHROTTLE_ENABLED=1", cwd=tmp_path)
    assert unknown.returncode == 2 and "-s AUTOTHROTTLE_ENABLED: unknown setting" in unknown.stderr
    assert "DOWNLOAD_DELAY" in unknown.stderr and "per_host_delay" in unknown.stderr


SHOP_SPIDER = '''
from crawlcluster import Spider


class ShopSpider(Spider):
    name = "shop"
    start_urls = ["http://127.0.0.1:9/"]
    per_host_delay = 0.4
    custom_settings = {"ROBOTSTXT_OBEY": False}

    def parse(self, response):
        yield {"url": response.url}
'''


def test_submit_imports_from_the_current_directory_and_keeps_the_spiders_settings_under_s(pg, tmp_path):
    """A cluster's project: the spider's class settings are written into it, -s wins over them,
    -a is kept as the spider's arguments, and the spider package is found in the current directory."""
    from crawlcluster.database import projects
    from crawlcluster.db import get_engine

    package = tmp_path / "uxspiders"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "shop.py").write_text(SHOP_SPIDER)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CRAWLCLUSTER_DATABASE_URL": pg,
           "CRAWLCLUSTER_SPIDER_PACKAGES": "uxspiders"}
    done = subprocess.run([*CLI, "submit", "uxspiders.shop:ShopSpider", "-a", "category=toys",
                           "-s", "DOWNLOAD_DELAY=2", "-s", "CONCURRENT_REQUESTS_PER_DOMAIN=3",
                           "-s", "DEPTH_LIMIT=4"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    with get_engine(pg).connect() as conn:
        row = projects.project_row(conn, "shop")
    assert row is not None and row["max_depth"] == 4
    settings = row["settings"]
    # -s wins over the class's per_host_delay = 0.4; custom_settings' ROBOTSTXT_OBEY=False is kept
    assert settings["per_host_delay"] == 2.0 and settings["per_host_concurrency"] == 3
    assert settings["obey_robots"] is False
    assert settings["spider_kwargs"] == {"category": "toys"}
    refused = subprocess.run([*CLI, "submit", "uxspiders.shop:ShopSpider",
                              "-s", "CRAWLCLUSTER_MAX_BODY_BYTES=100"],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "a cluster-wide setting" in refused.stderr


def test_setting_warnings_name_the_right_setting_and_meta_with_data_is_refused():
    class Typos(Spider):
        name = "typos"
        obey_robot = False
        ROBOTSTXT_OBEY = False
        custom_settings = {"AUTOTHROTTLE_ENABLED": True, "DOWNLOAD_DELAY": 0.5, "RETRY_ENABLED": False}

    assert (Typos.per_host_delay, Typos.retries) == (0.5, 0)
    warnings = setting_warnings(Typos, Spider)
    assert any("Typos.obey_robot is not a crawlcluster setting" in w and "did you mean obey_robots?" in w
               for w in warnings)
    assert any("Typos.ROBOTSTXT_OBEY is not read" in w and "obey_robots" in w for w in warnings)
    assert any("custom_settings['AUTOTHROTTLE_ENABLED'] has no meaning in crawlcluster" in w
               for w in warnings)
    assert len(warnings) == 3
    with pytest.raises(ConfigurationError, match="custom_settings\\['DOWNLOAD_DELAY'\\]"):
        type("Bad", (Spider,), {"custom_settings": {"DOWNLOAD_DELAY": "soon"}})
    assert Request("http://a.example/", meta={"k": 1}).data == {"k": 1}
    with pytest.raises(ConfigurationError, match="pass data= only"):
        Request("http://a.example/", meta={"k": 1}, data={"k": 2})


def test_item_pipelines_in_custom_settings_is_known_and_gets_no_warning():
    class Piped(Spider):
        name = "piped"
        custom_settings = {"ITEM_PIPELINES": {"tests.pipeline_spiders.JsonWriterPipeline": 300},
                           "DOWNLOAD_DELAY": 0.5}

    assert setting_warnings(Piped, Spider) == []
    assert Piped.per_host_delay == 0.5

    class Misplaced(Spider):
        name = "misplaced"
        ITEM_PIPELINES = {"tests.pipeline_spiders.JsonWriterPipeline": 300}

    (warning,) = setting_warnings(Misplaced, Spider)
    assert "Misplaced.ITEM_PIPELINES is not read" in warning and "custom_settings" in warning
    with pytest.raises(ConfigurationError, match="-s ITEM_PIPELINES: not a setting of a crawl here"):
        parse_assignments(["ITEM_PIPELINES={}"])
