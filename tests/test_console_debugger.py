"""The console's step debugger in a real browser (Debian's Chromium through pyppeteer), against a
console serving an SQLite file with one project whose spider is installed (tests.trial_spiders):
it shows the items and follow-ups of a known page, runs a follow-up as the next step with one
click, shows a raising callback's traceback, loads no spider outside the allow-list, and stores
nothing. The catalogue site's own hit log says which pages were fetched."""

from __future__ import annotations

import os
from typing import Any, Iterator

import httpx
import pytest

import crawlcluster
from crawlcluster import settings
from crawlcluster.db import dispose_all
from tests.test_console import Browser, Console
from tests.trial_spiders import CatalogueSpider, catalogue_site


@pytest.fixture(scope="module")
def debugger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("debugger")
    site = catalogue_site()
    database_url = f"sqlite:///{tmp / 'console.db'}"
    settings.configure(spider_packages="tests")
    crawlcluster.submit(CatalogueSpider, project="shop", database_url=database_url,
                        spider_kwargs={"start_urls": [site.url + "/cat"]})
    settings.reset()
    env = {**os.environ, "CRAWLCLUSTER_DATABASE_URL": database_url, "CRAWLCLUSTER_BROKER_URL": "memory://",
           "CRAWLCLUSTER_SPIDER_PACKAGES": "tests"}
    console = Console(env, tmp / "console.log")
    browser = Browser()
    yield {"site": site, "console": console, "browser": browser, "db": database_url}
    browser.close()
    console.stop()
    site.stop()
    dispose_all()


def _run_step(browser: Browser, **fields: str) -> None:
    """Fill the step form (a project or a spider path, URL, callback) and press Run."""
    for name, value in fields.items():
        tag = "select" if name == "project" else "input"
        browser.js(f"document.querySelector('#step {tag}[name={name}]').value = {value!r}")
    browser.click_and_wait("#run-step")


def test_the_debugger_shows_the_items_and_follow_ups_and_runs_the_next_step_with_one_click(debugger):
    browser, console, site = debugger["browser"], debugger["console"], debugger["site"]
    assert browser.goto(console.url + "/debug") == 200
    _run_step(browser, project="shop", url=site.url + "/cat")
    assert [p for _t, p, _h in site.log] == ["/cat"]
    assert '"title": "Catalogue"' in browser.texts("#items pre")[0]
    rows = browser.texts("#followups tbody td.url")
    assert rows == [site.url + "/p/1", site.url + "/p/2"]
    assert browser.texts("#followups tbody td code")[:2] == ["parse_product", f'{{"from": "{site.url}/cat"}}']
    # the page's HTML is shown as text, in a collapsed block
    assert browser.js("document.querySelector('#page-html').open") is False
    assert '<a class="product" href="/p/1">' in browser.texts("#html")[0]
    assert browser.js("document.querySelectorAll('#html a').length") == 0
    # one click: the first follow-up runs with its own callback and data
    browser.click_and_wait('#followups tbody tr:first-child button[data-action="next-step"]')
    assert [p for _t, p, _h in site.log] == ["/cat", "/p/1"]
    assert "parse_product" in browser.texts("#step-result h2")[0]
    item = browser.texts("#items pre")[0]
    assert '"name": "Product 1"' in item and '"price": 1.5' in item
    logged = f"INFO tests.trial_spiders: product page {site.url}/p/1 from {site.url}/cat"
    assert browser.texts("#logs") == [logged]
    assert browser.texts("#followups td.empty") == ["No follow-up request."]
    # nothing was stored: the project's single seed row is still pending, no item
    stats = crawlcluster.Crawl("shop", database_url=debugger["db"]).stats(figures=False)
    assert (stats["items"], stats["pending"], stats["done"]) == (0, 1, 0)


def test_the_debugger_shows_the_traceback_of_a_raising_callback(debugger):
    browser, console, site = debugger["browser"], debugger["console"], debugger["site"]
    browser.goto(console.url + "/debug")
    _run_step(browser, spider="tests.trial_spiders:CatalogueSpider", url=site.url + "/cat",
              callback="parse_broken")
    traceback = browser.texts("#traceback")[0]
    assert traceback.startswith("Traceback (most recent call last)")
    assert f"ValueError: no basket on {site.url}/cat" in traceback
    assert browser.js("document.querySelector('#step-result').dataset.ok") == "no"
    assert browser.js("document.querySelector('#items')") is None


def test_the_debugger_loads_no_spider_outside_the_allow_list_and_needs_the_token(debugger):
    browser, console, site = debugger["browser"], debugger["console"], debugger["site"]
    browser.goto(console.url + "/debug")
    hits = len(site.log)
    _run_step(browser, spider="os:path", url=site.url + "/cat")
    assert "outside CRAWLCLUSTER_SPIDER_PACKAGES" in browser.texts("#problem")[0]
    assert len(site.log) == hits  # nothing fetched
    refused = httpx.post(console.url + "/debug", data={"url": site.url + "/cat", "project": "shop"})
    assert refused.status_code == 403 and len(site.log) == hits
