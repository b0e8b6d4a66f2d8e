"""Submitting a crawl: the spider checked against the project's own, its start requests
turned into rows, and the project created or set running with them in one transaction.

    crawl = crawlcluster.submit(["http://127.0.0.1:8000/"], project="demo", max_pages=1000)
"""

from __future__ import annotations

import logging
import time
from typing import Any, Iterable

from crawlcluster import scheduling, spider_settings
from crawlcluster.client import Crawl
from crawlcluster.database import projects as lifecycle
from crawlcluster.database import tasks, timers
from crawlcluster.db import get_engine
from crawlcluster.errors import ConfigurationError, InvalidURL
from crawlcluster.request_rows import seed_rows
from crawlcluster.spider import (
    LinkSpider,
    Request,
    Spider,
    check_spider_allowed,
    load_spider_class,
    spider_path,
)
from crawlcluster.urls import host_port, normalize_url, url_host

logger = logging.getLogger(__name__)

__all__ = ["submit"]

LINK_SPIDER_PATH = spider_path(LinkSpider)


def start_hosts(requests: list[Request], existing: dict[str, Any] | None) -> list[str]:
    """The hosts (``host:port``) of the start requests a person submitted, with those the
    project trusted before: the address guard trusts them as given, so a crawl of
    ``http://localhost:8000/`` or an intranet host works, while a URL found later that
    resolves to a private address is refused unless ``allow_private`` names it. A start URL
    on its scheme's default port trusts the host's ports 80 and 443 both, as the link spider
    follows http to https of one host."""
    hosts = set(((existing or {}).get("settings") or {}).get("start_hosts") or ())
    for request in requests:
        try:
            url = normalize_url(request.url)
        except InvalidURL:
            continue  # seed_rows says what is wrong with it
        host = host_port(url)
        if url_host(url) != host:  # the default port: http and https of the host are one site
            name = host.rpartition(":")[0]
            hosts.update((f"{name}:80", f"{name}:443"))
        else:
            hosts.add(host)
    return sorted(hosts)


def _project_spider(existing: dict[str, Any]) -> tuple[type[Spider], dict[str, Any]]:
    """The spider class and keyword arguments an existing project runs."""
    kwargs = dict((existing.get("settings") or {}).get("spider_kwargs") or {})
    try:
        return load_spider_class(existing["spider"]), kwargs
    except ConfigurationError as exc:
        raise ConfigurationError(
            f"project {existing['name']!r} runs the spider {existing['spider']!r}, "
            "which cannot be imported here "
            f"({exc}); submit its URLs where that spider is installed, or pass replace_spider=True "
            "(--replace-spider) to crawl them with the link spider instead") from None


def submit(
    target: str | Iterable[str] | type[Spider],
    project: str | None = None,
    *,
    max_pages: int | None = None,
    max_depth: int | None = None,
    spider_kwargs: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
    database_url: str | None = None,
    replace_spider: bool = False,
    allow_private: Iterable[str] | None = None,
) -> Crawl:
    """Start (or restart) a crawl and return its :class:`Crawl` handle.

    ``target`` is a list of URLs (the built-in link spider follows links on their hosts),
    a :class:`Spider` subclass, or a spider's import path (``pkg.module:MySpider``). The
    spider must be importable on every worker node, and its package named in
    ``CRAWLCLUSTER_SPIDER_PACKAGES`` here and on the workers (:class:`SpiderNotAllowed`
    otherwise, saying how to allow it).

    Submitting to an existing project adds the new start URLs and sets it running. The
    project keeps its spider: URLs go to its default callback (a project of the link
    spider also follows links on the new URLs' hosts), and a different spider is refused
    unless ``replace_spider`` is set, because the project's rows name callbacks of its own
    spider. A URL the project knows is not added again, but one that failed is fetched
    again, with fresh retries; a done one only with ``force_update``.

    The hosts of the start requests are trusted by the address guard as given (a crawl of
    ``http://localhost:8000/`` works); ``allow_private`` (host, host:port, address or
    network) lets URLs found later reach those private addresses too.
    """
    if isinstance(target, str) and "://" not in target and ":" in target:
        target = load_spider_class(target)  # "package.module:SpiderClass"
    engine = get_engine(database_url)
    now = time.time()
    if isinstance(target, type) and not issubclass(target, Spider):
        raise ConfigurationError(f"{target!r} is not a crawlcluster.Spider subclass")
    if project is None and isinstance(target, type):
        project = target.name or target.__name__.lower()
    urls: list[str] = []
    if not isinstance(target, type):
        urls = [target] if isinstance(target, str) else list(target)
        if not urls:
            raise InvalidURL("", "no start URL given")
        urls = [normalize_url(u) for u in urls]
        project = project or url_host(urls[0]).replace(":", "_")
    assert project is not None
    with engine.connect() as conn:
        existing = lifecycle.project_row(conn, project)
    if isinstance(target, type):
        spider_cls = target
        check_spider_allowed(spider_path(spider_cls))  # the workers would refuse it: say so now
        if existing and existing["spider"] != spider_path(spider_cls) and not replace_spider:
            raise ConfigurationError(
                f"project {project!r} runs the spider {existing['spider']!r}, not "
                f"{spider_path(spider_cls)!r}; "
                "its rows name that spider's callbacks. Submit to another project, or pass "
                "replace_spider=True (--replace-spider) to replace its spider")
        kwargs = dict(spider_kwargs or {})
        spider = spider_cls(**kwargs)
        for warning in spider_settings.setting_warnings(spider_cls, Spider):
            logger.warning("spider %s: %s", spider_path(spider_cls), warning)
        # its project settings (class attributes, custom_settings), under those given here
        settings = {**spider_settings.project_values(spider), **(settings or {})}
        requests = [spider.with_defaults(r) for r in spider.start()]
    elif existing and existing["spider"] != LINK_SPIDER_PATH and not replace_spider:
        # the project's own spider takes the URLs, with its own arguments
        spider_cls, kwargs = _project_spider(existing)
        kwargs.update(spider_kwargs or {})
        spider = spider_cls(**kwargs)
        requests = [spider.with_defaults(Request(u)) for u in urls]
    else:
        spider_cls = LinkSpider
        domains = {url_host(u) for u in urls}
        if existing and existing["spider"] == LINK_SPIDER_PATH:  # a link crawl grows to the new hosts
            kept = ((existing.get("settings") or {}).get("spider_kwargs") or {}).get("allowed_domains")
            domains |= set(kept or [])
        kwargs = {"allowed_domains": sorted(domains), **(spider_kwargs or {})}
        spider = spider_cls(**kwargs)
        requests = [spider.with_defaults(Request(u)) for u in urls]
    # URLs added to a project keep its limits; a spider (re)submitted brings its own
    limits = existing if existing and not isinstance(target, type) else {}
    if max_pages is None:
        max_pages = limits.get("max_pages") if limits.get("max_pages") is not None else spider.max_pages
    if max_depth is None:
        max_depth = limits.get("max_depth") if limits.get("max_depth") is not None else spider.max_depth
    settings = dict(settings or {})
    if allow_private is not None:
        settings["allow_private"] = list(allow_private)
    checked = scheduling.check_project_settings(settings)
    columns = {k: checked.pop(k) for k in scheduling.PROJECT_COLUMNS if k in checked}
    project_settings = {**((existing or {}).get("settings") or {}), **checked, "spider_kwargs": kwargs,
                        "start_hosts": start_hosts(requests, existing)}
    rows = seed_rows(project, requests, spider, project_settings, now)
    values = {"spider": spider_path(spider_cls), "settings": project_settings, "max_pages": max_pages,
              "max_depth": max_depth, **columns}
    # project and seeds in one transaction: the scheduler never sees a running project
    # with no rows and calls it finished
    with engine.begin() as conn:
        if existing is None:
            lifecycle.create(conn, project, values, now)
        else:
            lifecycle.resubmit(conn, project, values, now)
        added = tasks.insert_tasks(conn, project, rows, max_pages=max_pages,
                                   reopen_failed=scheduling.RetryRules.of_row)
        for method_name in dir(spider_cls):
            interval = getattr(getattr(spider_cls, method_name, None), scheduling.EVERY_ATTR, None)
            if interval:
                timers.set_timer(conn, project, method_name, interval, now=now)
    logger.info("submitted %s: %d start URLs, %d new", project, len(rows), added)
    return Crawl(project, database_url=database_url)
