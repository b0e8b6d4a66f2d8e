"""Trying a callback on one URL: the one code path behind ``crawlcluster parse``, ``crawlcluster
shell`` and the console's step debugger.

:func:`try_url` fetches a page with the workers' own fetcher (``workers/fetcher.py``; the
browser tier's renderer when the request renders), builds the :class:`~crawlcluster.http.Response`
the parse stage builds, runs the callback with the parse engine's
:func:`~workers.callbacks.run_callback`, and returns a :class:`TrialResult`: the items, the
follow-up requests (and whether the crawl would follow each), the log lines the callback
wrote, its traceback, and the response. Nothing is stored: no database, no broker.

The URL a person gives here is trusted by the address guard as a submitted start URL is
(its host and port); redirects and follow-ups are not, as in a crawl. Redirects are
followed here (up to ``max_redirects``), where a crawl makes each hop a row of its own.
robots.txt is not asked: the person asked for this one page.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence
from urllib.parse import urlsplit

from crawlcluster import settings
from crawlcluster.errors import ConfigurationError, InvalidURL
from crawlcluster.http import Request, Response
from crawlcluster.messages import FetchEntry, entry_callback
from crawlcluster.request_rows import task_row
from crawlcluster.runspider import import_current_directory
from crawlcluster.spider import LinkSpider, Spider, load_spider_class
from crawlcluster.urls import DEFAULT_PORTS, normalize_url, url_host
from workers.callbacks import filter_requests, run_callback

logger = logging.getLogger(__name__)

__all__ = ["TrialResult", "load_trial_spider", "try_url", "try_page", "follow", "start_trust"]

# what a result keeps of the page's HTML, at most (the console shows it; the CLI's --json prints it)
HTML_CHARS = 200_000


@dataclass
class TrialResult:
    """What one try gave. ``error`` is the callback's (``traceback`` its text) or the fetch's
    (``fetch_error``, the callback then not run); ``requests`` are dicts (url, callback,
    data, render, method, priority, followed: whether a crawl would add it)."""

    url: str
    callback: str
    depth: int = 0
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    final_url: str | None = None
    redirects: list[str] = field(default_factory=list)
    rendered: bool = False
    html: str = ""
    body_bytes: int = 0
    items: list[dict[str, Any]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    error: str | None = None
    traceback: str | None = None
    fetch_error: str | None = None
    elapsed_seconds: float = 0.0
    response: Response | None = field(default=None, repr=False)
    # the requests a crawl would add (on-site, valid), for follow()
    kept_requests: list[Request] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> bool:
        return self.error is None and self.fetch_error is None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: everything but the Response object."""
        out = {k: v for k, v in self.__dict__.items() if k not in ("response", "kept_requests")}
        out["ok"] = self.ok
        return out


def load_trial_spider(path: str | None, *, allow_named: bool, kwargs: dict[str, Any] | None = None,
                      url: str | None = None) -> Spider:
    """The spider at ``path`` (None: the built-in link spider, kept on ``url``'s host as a
    URL-only submission is), built with ``kwargs``.

    ``allow_named`` (the CLI: the person at the terminal named it) adds its module to the
    allowed spider packages of this process, as ``crawlcluster crawl pkg.mod:Spider`` does;
    the console passes False, so only installed, allowed spiders run from a browser."""
    if not path:
        domains = [url_host(normalize_url(url))] if url else None
        return LinkSpider(**{"allowed_domains": domains, **(kwargs or {})})
    if allow_named:
        from crawlcluster.embedded import allow_named_spider

        import_current_directory()
        allow_named_spider(path)
    return load_spider_class(path)(**(kwargs or {}))


def start_trust(url: str) -> list[str]:
    """The address guard's trust for a URL a person gives: its ``host:port``, as a
    submitted start URL's (a default port trusts the host's ports 80 and 443 both)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if not host:
        return []
    name = f"[{host}]" if ":" in host else host
    try:
        port = parts.port
    except ValueError:
        return []
    if port is None or port == DEFAULT_PORTS.get(parts.scheme):
        return [f"{name}:80", f"{name}:443"]
    return [f"{name}:{port}"]


class _LogCapture(logging.Handler):
    """The log lines written from one thread while a callback runs (INFO and up)."""

    _lock = threading.Lock()  # one capture at a time: it lowers the root logger's level

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.thread = threading.get_ident()
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.lines.append(self.format(record))

    def __enter__(self) -> "_LogCapture":
        self._lock.acquire()
        root = logging.getLogger()
        self._saved = (root.level, [(h, h.level) for h in root.handlers])
        for handler, level in self._saved[1]:
            handler.setLevel(max(level, root.level))  # they print what they printed before
        root.setLevel(min(root.level, logging.INFO))
        root.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        root = logging.getLogger()
        root.removeHandler(self)
        level, handlers = self._saved
        root.setLevel(level)
        for handler, handler_level in handlers:
            handler.setLevel(handler_level)
        self._lock.release()


def _entry(spider: Spider, request: Request, depth: int,
           project_settings: dict[str, Any] | None) -> FetchEntry:
    """The fetch entry the scheduler would send for ``request`` (its row's fetch options)."""
    url = normalize_url(request.url)
    row = task_row("trial", url, request, spider=spider, project_settings=project_settings, depth=depth,
                   now=time.time())
    entry: FetchEntry = {"id": row["task_id"], "url": url, "depth": depth, "cb": row["callback"]}
    if row["fetch"]:
        entry["fetch"] = row["fetch"]
    if row["data"] is not None:
        entry["data"] = row["data"]
    return entry


def _request_dict(spider: Spider, request: Request, kept: set[str]) -> dict[str, Any]:
    try:
        url = normalize_url(request.url)
    except InvalidURL:
        url = request.url
    return {"url": url, "callback": request.callback_name(), "data": request.data, "render": request.render,
            "method": request.method.upper(), "priority": request.priority, "followed": url in kept}


class Engines:
    """The fetcher (and the renderer, started on first use) one try or one ``--depth`` run
    uses; built from the settings and closed at the end unless they were given."""

    def __init__(self, fetcher: Any = None, renderer: Any = None) -> None:
        self._fetcher, self._renderer = fetcher, renderer
        self._own: list[Any] = []

    @property
    def fetcher(self) -> Any:
        if self._fetcher is None:
            from workers.fetcher import Fetcher

            self._fetcher = Fetcher.from_settings(settings.current())
            self._own.append(self._fetcher)
        return self._fetcher

    @property
    def renderer(self) -> Any:
        if self._renderer is None:
            from crawlcluster.app import render_unavailable
            from workers.browser.renderer import Renderer

            own = settings.current()
            missing = render_unavailable(chromium_path=own.chromium_path)
            if missing:
                raise ConfigurationError(f"cannot render: {missing}")
            self._renderer = Renderer.from_settings(own)
            self._own.append(self._renderer)
        return self._renderer

    def close(self) -> None:
        for engine in self._own:
            engine.close()
        self._own.clear()


def _fetch(engines: Engines, entry: FetchEntry, trust: Sequence[str], result: TrialResult,
           render: bool) -> tuple[Any, FetchEntry]:
    """Fetch (or render) ``entry``, following redirects: the last engine result (None when
    the fetch failed) and the entry it was for."""
    max_redirects = settings.current().max_redirects
    while True:
        if render:
            answer = engines.renderer.render_many([entry], trust=list(trust))[0]
        else:
            answer = engines.fetcher.fetch_many([entry], trust=list(trust))[0]
        if not answer.ok:
            result.status = answer.error.status_code
            result.fetch_error = str(answer.error)
            return None, entry
        target = getattr(answer, "redirect_to", None)
        if not target:
            return answer, entry
        result.redirects.append(entry["url"])
        if len(result.redirects) > max_redirects:
            hops = len(result.redirects)
            result.fetch_error = f"too many redirects ({hops}, max_redirects={max_redirects})"
            return None, entry
        entry = {**entry, "url": normalize_url(target)}
        fetch = dict(entry.get("fetch") or {})
        if answer.status in (301, 302, 303) and fetch.get("method", "GET") != "GET":
            fetch.pop("method", None)
            fetch.pop("body", None)
            entry["fetch"] = fetch


def try_url(spider: Spider, target: str | Request, *, callback: str | None = None, data: Any = None,
            render: bool | str | None = None, depth: int = 0, trust: Sequence[str] | None = None,
            project_settings: dict[str, Any] | None = None, engines: Engines | None = None,
            run: bool = True) -> TrialResult:
    """Fetch ``target`` (a URL or a Request) as a worker would, run ``callback`` (default:
    the request's, else ``parse``) on it as the parse stage does, and return what it gave.

    ``trust`` is what the address guard lets this fetch reach although private (default:
    the URL's own host and port, as a submitted start URL). Never raises for a page or a
    callback: the result says what went wrong. ``run=False`` only fetches (the shell)."""
    request = target if isinstance(target, Request) else Request(target)
    if callback:
        request.callback = callback
    if data is not None:
        request.data = data
    if render is not None:
        request.render = render
    request = spider.with_defaults(request)
    result = TrialResult(url=request.url, callback=request.callback_name(), depth=depth)
    started = time.monotonic()
    own_engines = engines is None
    engines = engines or Engines()
    try:
        entry = _entry(spider, request, depth, project_settings)
        result.url = entry["url"]
        trust = start_trust(entry["url"]) if trust is None else trust
        answer, fetched = _fetch(engines, entry, trust, result, render=request.render is True)
        response = _response(answer, fetched, result) if answer is not None else None
        if response is not None and request.render == "auto" and spider.needs_render(response):
            answer, fetched = _fetch(engines, fetched, trust, result, render=True)
            response = _response(answer, fetched, result) if answer is not None else None
        if response is not None and run:
            _run(spider, result, response)
    except (ConfigurationError, InvalidURL) as exc:
        result.fetch_error = str(exc)
    finally:
        if own_engines:
            engines.close()
        result.elapsed_seconds = time.monotonic() - started
    return result


@dataclass
class _SavedAnswer:
    """A page held in memory, in the shape of the fetcher's answer (:func:`try_page`)."""

    status: int
    headers: dict[str, str]
    body: bytes
    final_url: str | None = None


def try_page(spider: Spider, url: str, body: bytes, *, status: int = 200,
             headers: dict[str, str] | None = None, callback: str | None = None, data: Any = None,
             depth: int = 0) -> TrialResult:
    """Run ``callback`` on a page already in hand (``body``, as if ``url`` had answered it),
    as :func:`try_url` runs it on a fetched page: the same Response, the same
    ``run_callback``, the same sorting of follow-ups. Nothing is fetched or stored: a
    project's tests run their callbacks on saved pages this way
    (:func:`crawlcluster.testing.run_callback`)."""
    request = Request(url, callback=callback or "parse", data=data)
    request = spider.with_defaults(request)
    result = TrialResult(url=url, callback=request.callback_name(), depth=depth)
    started = time.monotonic()
    try:
        entry = _entry(spider, request, depth, None)
        result.url = entry["url"]
        answer = _SavedAnswer(status, dict(headers or {"content-type": "text/html; charset=utf-8"}), body)
        _run(spider, result, _response(answer, entry, result))
    except (ConfigurationError, InvalidURL) as exc:
        result.fetch_error = str(exc)
    finally:
        result.elapsed_seconds = time.monotonic() - started
    return result


def _response(answer: Any, entry: FetchEntry, result: TrialResult) -> Response:
    """The Response the parse stage builds from a fetched or rendered page."""
    rendered = hasattr(answer, "js_result")  # a RenderResult
    final_url = getattr(answer, "final_url", None) or entry["url"]
    response = Response(final_url, answer.status, answer.headers or {}, answer.body, data=entry.get("data"),
                        depth=entry.get("depth", 0), js_result=getattr(answer, "js_result", None),
                        rendered=rendered, request=Request.of_row(entry["url"], entry_callback(entry),
                                                                  entry.get("data"), entry.get("fetch")))
    result.status, result.headers, result.rendered = answer.status, dict(answer.headers or {}), rendered
    result.final_url = final_url if final_url != result.url else None
    result.body_bytes = len(answer.body)
    result.html = response.text[:HTML_CHARS] if answer.body else ""
    result.response = response
    return response


def _run(spider: Spider, result: TrialResult, response: Response) -> None:

    with _LogCapture() as capture:
        outcome = run_callback(spider, result.callback, response)
    result.logs = capture.lines
    if outcome.error is not None:
        result.error = outcome.error
        exc = outcome.exception
        result.traceback = ("".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
                            if exc is not None else outcome.error)
        return
    kept, _dropped = filter_requests(spider, outcome.requests, result.depth, None)
    kept_urls = {url for url, _ in kept}
    result.items = outcome.items
    result.requests = [_request_dict(spider, r, kept_urls) for r in outcome.requests]
    result.kept_requests = [r for _, r in kept]


def follow(spider: Spider, first: TrialResult, depth: int, *, max_requests: int | None = None,
           engines: Engines | None = None) -> Iterator[TrialResult]:
    """The tries of the follow-up requests of ``first``, breadth first, ``depth`` levels deep
    (each with its own callback and data), each URL once, at most ``max_requests`` in all
    (default: the trial_max_requests setting). Follow-ups are discovered URLs: the guard
    trusts only ``first``'s host, as a crawl trusts its start hosts."""
    limit = settings.current().trial_max_requests if max_requests is None else max_requests
    trust = start_trust(first.url)
    seen = {first.url}
    todo: deque[tuple[Request, int]] = deque((r, first.depth + 1) for r in first.kept_requests)
    done = 0
    own = engines is None
    engines = engines or Engines()
    try:
        while todo and done < limit:
            request, level = todo.popleft()
            if level > first.depth + depth:
                continue
            url = normalize_url(request.url)
            if url in seen:
                continue
            seen.add(url)
            done += 1
            result = try_url(spider, request, depth=level, trust=trust, engines=engines)
            todo.extend((r, level + 1) for r in result.kept_requests)
            yield result
    finally:
        if own:
            engines.close()


def run_on(spider: Spider, callback: str, response: Response) -> TrialResult:
    """Run ``callback`` on a response already fetched (``crawlcluster shell``'s ``run()``)."""
    outcome = run_callback(spider, callback, response)
    return TrialResult(url=response.url, callback=callback, items=outcome.items,
                       requests=[{"url": r.url, "callback": r.callback_name(), "data": r.data}
                                 for r in outcome.requests], error=outcome.error)
