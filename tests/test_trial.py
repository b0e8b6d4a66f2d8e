"""`crawlcluster parse` and `crawlcluster shell` against a local catalogue site: the items and
follow-ups of a known page, the traceback of a raising callback, `--depth 1` following the
requests with their own callbacks, a prompt with `response` bound; and the site's own hit log
says which pages were fetched. No database or broker is reachable: nothing is stored."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.trial_spiders import catalogue_site

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "crawlcluster.cli"]
SPIDER = "tests.trial_spiders:CatalogueSpider"


@pytest.fixture
def site() -> Iterator[Any]:
    served = catalogue_site()
    yield served
    served.stop()


def _env(**extra: str) -> dict[str, str]:
    # nothing to store into: a database and a broker nobody listens on
    return {**os.environ, "PYTHONPATH": str(ROOT),
            "CRAWLCLUSTER_DATABASE_URL": "postgresql+psycopg2://nobody@127.0.0.1:9/none",
            "CRAWLCLUSTER_BROKER_URL": "redis://127.0.0.1:9/0", "COLUMNS": "120", **extra}


def _cli(*args: str, cwd: Path = ROOT, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], cwd=cwd, env=_env(**env), input=stdin, capture_output=True,
                          text=True, timeout=60)


def _paths(site: Any) -> list[str]:
    return [path for _t, path, _h in site.log]


def test_parse_prints_the_items_and_follow_up_requests_of_a_known_page(site):
    done = _cli("parse", site.url + "/cat", "--spider", SPIDER)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "HTTP 200" in text and '"title": "Catalogue"' in text and "items (1)" in text
    assert f"-> {site.url}/p/1  parse_product  data={{\"from\": \"{site.url}/cat\"}}" in text
    assert f"-> {site.url}/p/2  parse_product" in text and "requests (2)" in text
    assert _paths(site) == ["/cat"]  # the one page, and no robots.txt
    as_json = _cli("parse", site.url + "/old", "--spider", SPIDER, "--json")
    assert as_json.returncode == 0, as_json.stderr
    [result] = json.loads(as_json.stdout)
    assert result["items"] == [{"url": site.url + "/cat", "title": "Catalogue"}]
    assert [(r["url"], r["callback"], r["data"], r["followed"]) for r in result["requests"]] == [
        (f"{site.url}/p/{n}", "parse_product", {"from": site.url + "/cat"}, True) for n in (1, 2)]
    assert (result["status"], result["redirects"], result["final_url"]) == (200, [site.url + "/old"],
                                                                             site.url + "/cat")
    assert "Catalogue" in result["html"] and result["error"] is None
    # without --spider: the link spider, on the page's host
    links = json.loads(_cli("parse", site.url + "/cat", "--json").stdout)[0]
    assert links["items"][0]["out_links"] == 3
    expected = [f"{site.url}/p/1", f"{site.url}/p/2", f"{site.url}/about"]
    assert [r["url"] for r in links["requests"]] == expected


def test_parse_exits_non_zero_with_the_traceback_when_the_callback_raises(site):
    done = _cli("parse", site.url + "/cat", "--spider", SPIDER, "--callback", "parse_broken")
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr
    assert f"ValueError: no basket on {site.url}/cat" in done.stderr and "trial_spiders.py" in done.stderr
    assert "callback raised" in done.stdout
    missing = _cli("parse", site.url + "/cat", "--spider", SPIDER, "--callback", "nope")
    assert missing.returncode == 1 and "no callback named 'nope'" in missing.stderr
    gone = _cli("parse", site.url + "/nowhere", "--spider", SPIDER)
    assert gone.returncode == 1 and "HTTP 404" in gone.stderr and "Traceback" not in gone.stderr


def test_parse_depth_1_follows_the_requests_with_their_own_callbacks_and_data(site):
    done = _cli("parse", site.url + "/cat", "--spider", SPIDER, "--depth", "1", "--json")
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert [(r["depth"], r["callback"], r["url"]) for r in results] == [
        (0, "parse", site.url + "/cat"), (1, "parse_product", site.url + "/p/1"),
        (1, "parse_product", site.url + "/p/2")]
    assert [r["items"] for r in results[1:]] == [[{"name": "Product 1", "price": 1.5}],
                                                 [{"name": "Product 2", "price": 2.5}]]
    # the callback's log line, with the data the request passed
    assert results[1]["logs"] == [
        f"INFO tests.trial_spiders: product page {site.url}/p/1 from {site.url}/cat"]
    assert sorted(_paths(site)) == ["/cat", "/p/1", "/p/2"]  # each once; /about is not a product
    # bounded: one follow-up in all
    site.log.clear()
    bounded = _cli("parse", site.url + "/cat", "--spider", SPIDER, "--depth", "3", "--json",
                   CRAWLCLUSTER_TRIAL_MAX_REQUESTS="1")
    assert len(json.loads(bounded.stdout)) == 2 and _paths(site) == ["/cat", "/p/1"]


def test_a_spider_package_in_the_current_directory_is_importable(site, tmp_path):
    package = tmp_path / "uxspiders"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "shop.py").write_text(
        "from crawlcluster import Spider\n\n"
        "class Shop(Spider):\n"
        "    def parse(self, response):\n"
        "        yield {'title': response.title, 'category': self.category}\n")
    done = _cli("parse", site.url + "/cat", "--spider", "uxspiders.shop:Shop", "-a", "category=books",
                "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]["items"] == [{"title": "Catalogue", "category": "books"}]


def test_shell_binds_response_request_spider_and_fetch(site):
    script = "\n".join([
        "print('TITLE', response.title, response.status)",
        "print('SPIDER', type(spider).__name__, request.url)",
        "print('RUN', run('parse_product').items)",
        f"fetch({site.url + '/p/2'!r})",
        "print('PRICE', response.css_first('span.price').text())",
        "",
    ])
    done = _cli("shell", site.url + "/cat", "--spider", SPIDER, stdin=script)
    assert done.returncode == 0, done.stderr
    assert "TITLE Catalogue 200" in done.stdout
    assert f"SPIDER CatalogueSpider {site.url}/cat" in done.stdout
    assert "RUN [{'name': 'Catalogue', 'price': None}]" in done.stdout
    assert "PRICE 2.5" in done.stdout
    assert f"{site.url}/cat answered 200" in done.stderr  # code.interact's banner goes to stderr
    assert _paths(site) == ["/cat", "/p/2"]


def test_parse_render_loads_the_page_in_the_render_tiers_browser(site):
    done = _cli("parse", site.url + "/cat", "--spider", SPIDER, "--render", "--json")
    assert done.returncode == 0, done.stderr
    [result] = json.loads(done.stdout)
    assert result["rendered"] is True
    assert result["items"] == [{"url": site.url + "/cat", "title": "Catalogue"}]
    assert [r["url"] for r in result["requests"]] == [f"{site.url}/p/1", f"{site.url}/p/2"]
    assert "/cat" in _paths(site)
