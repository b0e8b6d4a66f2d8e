"""The spider API: ``Spider`` subclasses, how workers find them, and the built-in link spider.

A spider is plain Python deployed beside the workers and found by import path
(``mypackage.spiders:NewsSpider``), so any parse worker on any node can load it. Its
callbacks receive a :class:`~crawlcluster.http.Response` and yield dicts (items) and
:class:`~crawlcluster.http.Request` objects (new URLs, deduplicated by task id across the
whole cluster). Importing this module builds no Celery app, so a spider module stays light.
"""

from __future__ import annotations

import importlib
import logging
from functools import lru_cache
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import urlsplit

from crawlcluster.errors import ConfigurationError, SpiderNotAllowed
from crawlcluster.http import Request, Response
from crawlcluster.rendering import RenderOptions, render_mode
from crawlcluster.urls import DEFAULT_PORTS

logger = logging.getLogger(__name__)

# Request and Response live in crawlcluster.http; Request stays importable from here
__all__ = ["Spider", "Request", "Response", "LinkSpider", "check_spider_allowed", "load_spider_class",
           "spider_packages", "spider_path"]


class Spider:
    """Base class of crawlcluster spiders.

    Subclasses set ``name`` (the default project name) and ``start_urls`` or override
    :meth:`start`, and implement :meth:`parse`. ``allowed_domains`` keeps the crawl on
    those hosts and their subdomains; ``max_depth`` and ``max_pages`` bound it.
    ``render`` (False, True or "auto") and ``render_options`` are the default of every
    request the spider makes that does not set its own (see :class:`Request`).

    Every per-project setting can be a class attribute (``obey_robots = False``,
    ``per_host_delay = 1.0``, ``user_agent``, ``default_headers``, ...) or a key of
    ``custom_settings``, in our names or Scrapy's (``ROBOTSTXT_OBEY``, ``DOWNLOAD_DELAY``, ...;
    see :mod:`crawlcluster.spider_settings`). ``self.logger`` writes lines that carry the
    project and the URL being parsed.
    """

    name: str | None = None
    start_urls: list[str] = []
    allowed_domains: list[str] | None = None
    max_depth: int | None = None
    max_pages: int | None = None
    priority: int = 0
    retries: int | None = None
    retry_delays: list[float] | None = None
    retry_policy: str | None = None  # "quick" (one-shot crawls) or "recurring" (long back-off)
    age: int | None = None
    itag: str | None = None
    auto_recrawl: bool | None = None
    render: bool | str = False
    render_options: RenderOptions | dict[str, Any] | None = None
    # needs_render's default heuristic: less visible text than this is "an empty shell"
    render_min_text_chars: int = 200
    # project settings (None: the project's, else the cluster's); written into the project's
    # settings when the spider is submitted (crawlcluster.spider_settings)
    obey_robots: bool | None = None
    per_host_concurrency: int | None = None
    per_host_delay: float | None = None
    rate: float | None = None
    burst: float | None = None
    queue_limit: int | None = None
    user_agent: str | None = None
    default_headers: dict[str, str] | None = None
    download_timeout: float | None = None
    # Scrapy's names (ROBOTSTXT_OBEY, DOWNLOAD_DELAY, ...) or ours, applied when the class is defined
    custom_settings: dict[str, Any] | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        from crawlcluster.spider_settings import apply_custom_settings

        apply_custom_settings(cls)

    def __init__(self, **kwargs: Any) -> None:
        for key, value in kwargs.items():
            setattr(self, key, value)

    @property
    def logger(self) -> logging.LoggerAdapter:
        """A logger named after the spider (as Scrapy's); each line carries the project and
        the URL whose callback is running (``project P, url U: message``)."""
        from crawlcluster.spider_log import SpiderLogger

        return SpiderLogger(logging.getLogger(self.name or type(self).__name__), {})

    def start(self) -> Iterable[Request]:
        """The first requests of a crawl; by default one per ``start_urls`` entry."""
        for url in self.start_urls:
            yield Request(url)

    def parse(self, response: Response) -> Iterable[Any]:
        raise NotImplementedError(f"{type(self).__name__}.parse callback is not defined")

    def on_finished(self, stats: dict[str, int]) -> None:
        """Called once each time the crawl finishes (nothing pending, queued or waiting to
        retry), on a parse worker, with the rows per state."""

    def with_defaults(self, request: Request) -> Request:
        """``request`` with the spider's ``render`` and ``render_options`` where it left
        them unset. Applied to start requests and to every request a callback yields."""
        if request.render is None:
            request.render = render_mode(self.render, type(self).__name__)
        if request.render_options is None and self.render_options is not None:
            request.render_options = RenderOptions.coerce(self.render_options)
        return request

    def needs_render(self, response: Response) -> bool:
        """Whether a page fetched without a browser needs one; asked only for
        ``render="auto"`` requests, before any callback sees the page. True sends the same
        URL to the render queue and remembers its host, so the host's later pages are
        rendered straight away (one wrong True costs a browser page per page of that host).

        The default is a heuristic for HTML pages answered 200 that have a ``<script>``:
        they need a browser when a ``<noscript>`` mentions JavaScript ("please enable
        JavaScript"), or when less than ``render_min_text_chars`` (200) characters of text
        are visible without scripts (an app shell such as ``<div id="root"></div>``).
        Override it for a site you know, e.g. ``return not response.css("#results")``.
        """
        if response.status != 200 or not response.is_html or not response.css_first("script"):
            return False
        for node in response.css("noscript"):
            if "javascript" in (node.text() or "").lower():
                return True
        return len(response.visible_text()) < self.render_min_text_chars

    def allows(self, url: str) -> bool:
        """Whether ``url`` is on an allowed domain (always, when none are set). An entry
        with a port (``127.0.0.1:8000``) allows that host on that port only."""
        if not self.allowed_domains:
            return True
        scheme, host, port = _scheme_host_port(url)
        return _on_allowed_domain(tuple(self.allowed_domains), type(self).__name__,
                                  host, port or DEFAULT_PORTS.get(scheme))

    def callback(self, name: str) -> Callable[[Response], Iterable[Any]]:
        method = getattr(self, name, None)
        if not callable(method):
            raise ConfigurationError(f"spider {type(self).__name__} has no callback named {name!r}")
        return method


class LinkSpider(Spider):
    """The spider behind URL-only submissions: follows links on the start URLs' hosts
    and stores, per page, its url, status, title, meta description, canonical link and
    number of out-links.

    It stays on the start URLs' hosts and ports: a start URL on a port of its own
    (``127.0.0.1:8000``) keeps the crawl on that port, and one on its scheme's default port
    keeps it on the default ports, 80 and 443, so ``http://example.com/`` may follow its
    upgrade to ``https://example.com/`` (one site, as browsers treat it) but never a link to
    ``example.com:6379`` or ``:10250``. Subdomains of a start host are followed, as
    ``allowed_domains`` does (the address guard still refuses any that resolve inside)."""

    name = "links"

    def allows(self, url: str) -> bool:
        """:meth:`Spider.allows`, with an entry without a port meaning the default ports only."""
        if not super().allows(url):
            return False
        if not self.allowed_domains:
            return True
        scheme, host, port = _scheme_host_port(url)
        if port is None or port == DEFAULT_PORTS.get(scheme):
            return True
        # a port of its own: only where an entry names it (Spider.allows checked the host)
        return _entry_names_port(tuple(self.allowed_domains), host, port)

    def parse(self, response: Response) -> Iterator[Any]:
        if not response.is_html:
            yield {
                "url": response.url,
                "status": response.status,
                "content_type": response.content_type,
                "bytes": len(response.body),
            }
            return
        links = response.links()
        description = response.css_first('meta[name="description"]')
        canonical = response.css_first('link[rel="canonical"]')
        canonical_href = canonical.attributes.get("href") if canonical is not None else None
        yield {
            "url": response.url,
            "status": response.status,
            "title": response.title,
            "description": description.attributes.get("content") if description is not None else None,
            "canonical": response.urljoin(canonical_href) if canonical_href else None,
            "out_links": len(links),
        }
        for url in links:
            yield Request(url)


# a page's links repeat from page to page: where a URL points and what an allowed_domains
# list says of a host are worked out once per process, not once per link
@lru_cache(maxsize=65536)
def _scheme_host_port(url: str) -> tuple[str, str, int | None]:
    """The scheme, lower-case host and explicit port of ``url`` (ValueError for a bad port)."""
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port


@lru_cache(maxsize=4096)
def _on_allowed_domain(entries: tuple[str, ...], spider_name: str, host: str, port: int | None) -> bool:
    for entry in entries:
        allowed = urlsplit("//" + entry.lower())
        domain = allowed.hostname or ""
        try:
            entry_port = allowed.port
        except ValueError:
            raise ConfigurationError(
                f"allowed_domains entry {entry!r} of {spider_name} has a bad port") from None
        if entry_port and entry_port != port:
            continue
        if host == domain or host.endswith("." + domain):
            return True
    return False


@lru_cache(maxsize=4096)
def _entry_names_port(entries: tuple[str, ...], host: str, port: int) -> bool:
    for entry in entries:
        allowed = urlsplit("//" + entry.lower())
        domain = allowed.hostname or ""
        if allowed.port == port and (host == domain or host.endswith("." + domain)):
            return True
    return False


def spider_path(spider: type[Spider]) -> str:
    """The import path workers use to load ``spider`` (``module:QualName``)."""
    module = spider.__module__
    if module == "__main__":
        raise ConfigurationError(
            f"spider {spider.__qualname__} is defined in __main__, which workers cannot import; "
            "move it into a module that is installed on every worker node")
    return f"{module}:{spider.__qualname__}"


BUILTIN_SPIDER_PACKAGE = "crawlcluster"  # the link spider and the demo's: always allowed


def spider_packages(value: str | None = None) -> tuple[str, ...]:
    """The module prefixes spiders may come from: ``crawlcluster`` and those of
    ``CRAWLCLUSTER_SPIDER_PACKAGES`` (``value``, default the current setting)."""
    if value is None:
        from crawlcluster import settings

        value = settings.current().spider_packages
    return (BUILTIN_SPIDER_PACKAGE, *[p.strip() for p in value.split(",") if p.strip()])


def split_spider_path(path: str) -> tuple[str, str]:
    """``pkg.mod:Outer.Spider`` (or ``pkg.mod.Spider``) -> ``("pkg.mod", "Outer.Spider")``."""
    module_name, sep, qualname = path.partition(":")
    if not sep:
        module_name, _, qualname = path.rpartition(".")
    if not module_name or not qualname:
        raise ConfigurationError(f"spider path {path!r} must look like 'package.module:SpiderClass'")
    return module_name, qualname


def module_allowed(module_name: str, packages: Iterable[str]) -> bool:
    """Whether ``module_name`` is one of ``packages`` or inside one, on whole dotted names:
    ``myproj`` allows ``myproj`` and ``myproj.spiders``, not ``myproject``."""
    parts = module_name.split(".")
    for package in packages:
        prefix = package.split(".")
        if parts[:len(prefix)] == prefix:
            return True
    return False


def check_spider_allowed(path: str, packages: Iterable[str] | None = None) -> None:
    """Raise :class:`SpiderNotAllowed` when ``path``'s module is outside ``packages``
    (default: :func:`spider_packages`), saying how to allow it."""
    module_name, _ = split_spider_path(path)
    allowed = tuple(packages) if packages is not None else spider_packages()
    if not module_allowed(module_name, allowed):
        top = module_name.split(".")[0]
        raise SpiderNotAllowed(
            f"spider {path!r} is outside CRAWLCLUSTER_SPIDER_PACKAGES (allowed: {', '.join(allowed)}); "
            f"to allow it, add its package on the workers and on the submitting machine, e.g. "
            f"CRAWLCLUSTER_SPIDER_PACKAGES={','.join([*allowed[1:], top])}")


def load_spider_class(path: str, packages: Iterable[str] | None = None) -> type[Spider]:
    """Import ``module:QualName`` (or ``module.QualName``) and check it is a Spider.

    The module must be inside ``packages`` (default: :func:`spider_packages`), checked
    before anything is imported. Whatever goes wrong on import (an exception, a missing
    module, ``SystemExit``) is a :class:`ConfigurationError` naming the path and the
    reason, so no spider module can take its worker process down by being imported."""
    check_spider_allowed(path, packages)
    module_name, qualname = split_spider_path(path)
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import spider module {module_name!r} for {path!r}: {exc}") from None
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - a module that raises or exits at import
        raise ConfigurationError(
            f"spider {path!r} raised at import: {type(exc).__name__}: {exc}") from None
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ConfigurationError(f"module {module_name!r} has no {qualname!r} (spider path {path!r})")
    if not (isinstance(obj, type) and issubclass(obj, Spider)):
        raise ConfigurationError(f"{path!r} is not a crawlcluster.Spider subclass")
    return obj
