"""Spiders from known packages only: workers import a spider only from
CRAWLCLUSTER_SPIDER_PACKAGES (and crawlcluster's own); a spider outside it, or one whose
module fails at import (even with SystemExit), stops its project once with a readable
reason and takes no worker down; robots.txt is handled without the spider, so a broken
project never blocks its host for the others."""

from __future__ import annotations

import sys
import time
from typing import Iterator

import pytest
from sqlalchemy import select

import crawlcluster
from crawlcluster import db, settings
from crawlcluster.errors import ConfigurationError, SpiderNotAllowed
from crawlcluster.schema import crawl_tasks
from crawlcluster.spider import LinkSpider, load_spider_class, module_allowed, spider_packages
from tests.scripted_site import ScriptedSite, page


def test_a_package_prefix_matches_whole_dotted_names_only():
    allowed = spider_packages("myproj, acme.spiders")
    assert allowed == ("crawlcluster", "myproj", "acme.spiders")
    assert module_allowed("myproj", allowed) and module_allowed("myproj.spiders.news", allowed)
    assert module_allowed("acme.spiders.shop", allowed) and module_allowed("crawlcluster.spider", allowed)
    assert not module_allowed("myproject", allowed) and not module_allowed("acme.tools", allowed)
    assert not module_allowed("acme", allowed) and not module_allowed("os", allowed)


def test_a_spider_outside_the_packages_is_refused_before_its_module_is_imported():
    sys.modules.pop("tests.exit_spiders", None)
    with pytest.raises(SpiderNotAllowed) as error:
        load_spider_class("tests.exit_spiders:ExitSpider", packages=spider_packages("myproj"))
    assert "tests.exit_spiders" not in sys.modules
    message = str(error.value)
    assert "'tests.exit_spiders:ExitSpider' is outside CRAWLCLUSTER_SPIDER_PACKAGES" in message
    assert "CRAWLCLUSTER_SPIDER_PACKAGES=myproj,tests" in message, message
    # the built-in spiders need no setting at all
    assert load_spider_class("crawlcluster.spider:LinkSpider", packages=spider_packages("")) is LinkSpider


def test_a_module_that_exits_or_is_missing_at_import_is_a_configuration_error(monkeypatch):
    monkeypatch.setenv("CRAWLCLUSTER_TEST_EXIT_AT_IMPORT", "1")
    sys.modules.pop("tests.exit_spiders", None)
    exits = r"'tests.exit_spiders:ExitSpider' raised at import: SystemExit: 3"
    with pytest.raises(ConfigurationError, match=exits):
        load_spider_class("tests.exit_spiders:ExitSpider")
    with pytest.raises(ConfigurationError, match="cannot import spider module 'tests.no_such_module'"):
        load_spider_class("tests.no_such_module:Spider")


def test_submit_refuses_a_spider_outside_the_packages_and_says_how_to_allow_it(monkeypatch):
    monkeypatch.setenv("CRAWLCLUSTER_SPIDER_PACKAGES", "myproj")
    with pytest.raises(SpiderNotAllowed, match="CRAWLCLUSTER_SPIDER_PACKAGES=myproj,tests"):
        crawlcluster.submit("tests.poison_spiders:TreeSpider", project="refused")
    from tests.poison_spiders import TreeSpider

    with pytest.raises(SpiderNotAllowed, match="'tests.poison_spiders:TreeSpider' is outside"):
        crawlcluster.submit(TreeSpider, project="refused")


@pytest.fixture
def tree() -> Iterator[ScriptedSite]:
    """``/`` links to /p0 ... /p19; each page is a leaf; robots.txt allows everything."""
    site = ScriptedSite()
    paths = [f"/p{i}" for i in range(20)]
    site.route("/", lambda _n, _h: page("home", tuple(paths)))
    robots = b"User-agent: *\nAllow: /\n"
    site.route("/robots.txt", lambda _n, _h: (200, {"Content-Type": "text/plain"}, robots))
    for path in paths:
        site.route(path, lambda _n, _h, path=path: page(path))
    yield site
    site.stop()


def _rows(project: str) -> list[dict]:
    with db.get_engine().connect() as conn:
        return [dict(r) for r in conn.execute(select(crawl_tasks).where(crawl_tasks.c.project == project))
                .mappings()]


def test_broken_spiders_stop_their_projects_once_and_another_project_crawls_their_host(tree, processes, pg):
    # the workers allow tests.exit_spiders only, and that module exits at import there;
    # the submitting process allows all of tests/, as a person's machine with other settings would
    processes.env.update({"CRAWLCLUSTER_SPIDER_PACKAGES": "tests.exit_spiders",
                          "CRAWLCLUSTER_TEST_EXIT_AT_IMPORT": "1"})
    crawlcluster.submit("tests.poison_spiders:TreeSpider", project="a-outside",
                        spider_kwargs={"base_url": tree.url})
    crawlcluster.submit("tests.exit_spiders:ExitSpider", project="b-exits",
                        spider_kwargs={"base_url": tree.url})
    processes.worker("fetch", "fetch")
    processes.worker("parse", "parse", "-c", "2")
    processes.worker("store", "store")
    parse_pids = sorted(processes.pids("parse"))
    processes.beat()
    started = time.monotonic()
    broken = {"a-outside": crawlcluster.Crawl("a-outside"), "b-exits": crawlcluster.Crawl("b-exits")}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(c.stats(figures=False)["status"] != "paused"
                                              for c in broken.values()):
        time.sleep(0.3)
    good = crawlcluster.submit([tree.url + "/"], project="c-good")
    stats = good.wait(timeout=60)
    took = time.monotonic() - started
    assert stats["pages"]["done"] == 21 and stats["pages"]["failed"] == 0, stats

    reasons = {"a-outside": "'tests.poison_spiders:TreeSpider' is outside CRAWLCLUSTER_SPIDER_PACKAGES",
               "b-exits": "'tests.exit_spiders:ExitSpider' raised at import: SystemExit: 3"}
    robots_projects = []
    for project, crawl in broken.items():
        info = crawl.stats(figures=False)
        assert info["status"] == "paused" and reasons[project] in info["pause_reason"], info
        assert f"crawlcluster retry {project} --failed" in info["pause_reason"]
        for row in _rows(project):
            if row["callback"] == "__robots__":
                robots_projects.append((project, row["status"]))
                continue
            assert row["status"] == "failed" and row["error_kind"] == "spider", row
            assert reasons[project] in row["error"], row
            assert row["dispatch_count"] == 1, row  # sent once, never again
    # whichever project took the host's robots.txt, it was recorded for the others: fetched
    # once, or twice when a broken project was paused with its robots.txt row still pending
    # (a paused project's rows are not sent) and the good project asked for its own
    assert tree.counts["/robots.txt"] in (1, 2), dict(tree.counts)
    assert tree.counts["/"] == 3 and all(tree.counts[f"/p{i}"] == 1 for i in range(20)), dict(tree.counts)
    log = processes.log("parse")
    assert log.count("project a-outside paused:") == 1, log[-3000:]
    assert log.count("project b-exits paused:") == 1, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    assert sorted(processes.pids("parse")) == parse_pids  # no worker process died or was replaced
    assert processes.procs["parse"].poll() is None
    print(f"two broken spiders stopped once each, robots.txt of the host from {robots_projects or 'c-good'}; "
          f"c-good crawled 21 pages; {took:.1f}s; parse worker PIDs unchanged {parse_pids}")
    settings.reset()
