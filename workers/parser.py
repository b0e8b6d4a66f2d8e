"""The parse stage's engine: run spider callbacks on a batch of pages, add their new URLs to
the frontier in one statement, and return each page's outcome and items for the store stage.

``tasks/parse.py`` calls :func:`process_pages`, as ``tasks/fetch.py`` calls
``workers/fetcher.py``. Each page reaches its callback as a
:class:`~crawlcluster.http.Response`; :func:`run_callback` sorts what the callback yields
into items and requests, and :func:`filter_requests` keeps the normalised, on-site ones
within the depth limit. Spiders are loaded by import path once per process and project
(refreshed every few seconds, so a project's settings can change while it runs). Redirects
arrive here as pages with a ``redirect`` target: the target becomes a row of its own,
carrying the chain so far, which is how loops and over-long chains are caught. A host's
robots.txt, which the scheduler asked for, is taken out of the batch first
(:func:`workers.robots.robots_outcomes`): no spider sees it.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from sqlalchemy.engine import Engine

from crawlcluster import settings
from crawlcluster.database import claims, tasks
from crawlcluster.database import projects as lifecycle
from crawlcluster.errors import ConfigurationError, InvalidURL, ProjectNotFound
from crawlcluster.http import Request, Response
from crawlcluster.messages import LAST_MODIFIED, Outcome, Page, carry_cost, decompress_body, entry_callback
from crawlcluster.request_rows import task_row
from crawlcluster.schema import DONE, FAILED
from crawlcluster.spider import Spider, load_spider_class
from crawlcluster.urls import normalize_url
from workers.robots import robots_outcomes

logger = logging.getLogger(__name__)

PROJECT_CACHE_SECONDS = 5.0


@dataclass
class CallbackOutcome:
    """What one callback run produced for one page."""

    items: list[dict[str, Any]] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    error: str | None = None
    # the exception itself, so the parse stage can log its traceback (rate-limited there)
    exception: BaseException | None = field(default=None, repr=False)


def run_callback(spider: Spider, callback_name: str, response: Response) -> CallbackOutcome:
    """Run a spider callback to the end and sort what it yields. An exception becomes the
    outcome's ``error`` (with the line that raised) and drops that page's partial output."""
    outcome = CallbackOutcome()
    try:
        produced = spider.callback(callback_name)(response)
        if produced is None:
            produced = ()
        elif isinstance(produced, (dict, Request, str)):
            produced = (produced,)  # a callback may return one item instead of yielding it
        for value in produced:
            if isinstance(value, Request):
                outcome.requests.append(spider.with_defaults(value))
            elif isinstance(value, dict):
                outcome.items.append(value)
            elif isinstance(value, str):
                outcome.requests.append(spider.with_defaults(Request(response.urljoin(value))))
            elif value is not None:
                raise TypeError(f"callback {callback_name} yielded {type(value).__name__}; "
                                "yield dicts (items) or Requests")
    except Exception as exc:  # noqa: BLE001 - a spider bug must end in a row state, not a crash
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        outcome = CallbackOutcome(error=f"{type(spider).__name__}.{callback_name} raised "
                                        f"{type(exc).__name__}: {exc} "
                                        f"({frame.filename}:{frame.lineno})", exception=exc)
    return outcome


def filter_requests(spider: Spider, requests: Iterable[Request], depth: int,
                    max_depth: int | None) -> tuple[list[tuple[str, Request]], int]:
    """The requests to add to the frontier as (normalised URL, request), and how many were dropped
    (invalid, off-site, or deeper than ``max_depth``)."""
    kept: list[tuple[str, Request]] = []
    dropped = 0
    if max_depth is not None and depth + 1 > max_depth:
        return kept, sum(1 for _ in requests)
    for request in requests:
        try:
            url = normalize_url(request.url)
        except InvalidURL:
            dropped += 1
            continue
        if not spider.allows(url):
            dropped += 1
            continue
        kept.append((url, request))
    return kept, dropped


@dataclass
class ProjectContext:
    name: str
    spider: Spider
    max_depth: int | None
    max_pages: int | None
    loaded_at: float
    settings: dict[str, Any] | None = None
    created_at: float = 0.0  # a deleted and re-created project is another generation


_contexts: dict[str, ProjectContext] = {}
_contexts_lock = threading.Lock()


def project_context(engine: Engine, project: str) -> ProjectContext:
    """The spider instance and limits of ``project``, cached for a few seconds."""
    context = _contexts.get(project)
    if context is not None and time.monotonic() - context.loaded_at < PROJECT_CACHE_SECONDS:
        return context
    with engine.connect() as conn:
        row = lifecycle.project_row(conn, project)
    if row is None:
        raise ProjectNotFound(project)
    spider_cls = load_spider_class(row["spider"])
    spider = spider_cls(**(row["settings"] or {}).get("spider_kwargs", {}))
    context = ProjectContext(project, spider, row["max_depth"], row["max_pages"], time.monotonic(),
                             settings=row["settings"] or {}, created_at=row["created_at"])
    with _contexts_lock:
        _contexts[project] = context
    return context


@dataclass
class _FailureWindow:
    started: float
    lines: int = 0
    unlogged: int = 0


class CallbackErrorLog:
    """Logs spider callback exceptions at WARNING without flooding the worker's log.

    The row of every failed page keeps its error; the log is for the person watching the
    worker. For each (project, callback, exception type, file and line) a process logs the
    full traceback once per ``window_seconds``, then up to ``lines_per_window`` one-line
    warnings, then only counts; the count is logged with the next failure of that kind
    after the window ends (which logs its traceback again). A callback that raises on
    100,000 pages thus costs a few lines a minute. Kinds are bounded too: the least
    recently seen is forgotten beyond ``max_kinds``.
    """

    def __init__(self, window_seconds: float | None = None, lines_per_window: int | None = None,
                 clock: Callable[[], float] = time.monotonic, max_kinds: int = 1000) -> None:
        own = settings.current()
        self.window_seconds = window_seconds if window_seconds is not None else own.callback_error_log_seconds
        self.lines_per_window = (lines_per_window if lines_per_window is not None
                                 else own.callback_error_log_lines)
        self.clock = clock
        self.max_kinds = max_kinds
        self._windows: OrderedDict[tuple[Any, ...], _FailureWindow] = OrderedDict()
        self._lock = threading.Lock()

    def report(self, project: str, url: str, callback: str, error: str, exc: BaseException | None) -> None:
        """Log one callback failure of ``project`` on ``url`` (``error`` is the row's text)."""
        frame = traceback.extract_tb(exc.__traceback__)[-1] if exc is not None and exc.__traceback__ else None
        key = (project, callback, type(exc).__name__ if exc else error,
               frame.filename if frame else "", frame.lineno if frame else 0)
        now = self.clock()
        with self._lock:
            window = self._windows.get(key)
            if window is None or now - window.started >= self.window_seconds:
                unlogged = window.unlogged if window else 0
                self._windows[key] = _FailureWindow(now)
                self._windows.move_to_end(key)
                while len(self._windows) > self.max_kinds:
                    self._windows.popitem(last=False)
                mode = "traceback"
            elif window.lines < self.lines_per_window:
                window.lines += 1
                mode = "line"
            else:
                window.unlogged += 1
                return
        if mode == "line":
            logger.warning("callback failed: project %s, url %s, callback %s: %s (traceback logged above; "
                           "at most once per %gs)", project, url, callback, error, self.window_seconds)
            return
        if unlogged:
            logger.warning("project %s, callback %s: %d more failures like the one below were not "
                           "logged in the last %gs (their rows hold the errors)", project, callback,
                           unlogged, self.window_seconds)
        logger.warning("callback failed: project %s, url %s, callback %s: %s", project, url, callback, error,
                       exc_info=(type(exc), exc, exc.__traceback__) if exc is not None else None)


_callback_errors: CallbackErrorLog | None = None


def callback_error_log() -> CallbackErrorLog:
    """This process's :class:`CallbackErrorLog`, created with the current settings."""
    global _callback_errors
    if _callback_errors is None:
        _callback_errors = CallbackErrorLog()
    return _callback_errors


def _redirect_outcome(context: ProjectContext, page: Page, now: float,
                      new_rows: list[dict[str, Any]]) -> Outcome:
    outcome: Outcome = {"id": page["id"], "url": page["url"], "status": DONE, "code": page.get("code")}
    options = dict(page.get("fetch") or {})
    chain = list(options.get("redirects") or ()) + [page["url"]]
    try:
        target = normalize_url(page["redirect"])
    except InvalidURL as exc:
        return {**outcome,
                "status": FAILED, "kind": "redirect", "error": f"redirect to an invalid URL: {exc}"}
    outcome["final_url"] = target
    if target in chain:
        loop = " -> ".join(chain + [target])
        return {**outcome, "status": FAILED, "kind": "redirect", "error": f"redirect loop: {loop}"}
    max_redirects = settings.current().max_redirects
    if len(chain) > max_redirects:
        return {**outcome, "status": FAILED, "kind": "redirect",
                "error": f"too many redirects ({len(chain)}, max_redirects={max_redirects}) from {chain[0]}"}
    if not context.spider.allows(target):
        return {**outcome, "status": DONE}  # an off-site target is recorded, not followed
    options["redirects"] = chain
    if page.get("code") in (301, 302, 303) and options.get("method", "GET") != "GET":
        options.pop("method", None)
        options.pop("body", None)
    request = Request(target, callback=entry_callback(page), data=page.get("data"))
    new_rows.append(task_row(context.name, target, request, spider=context.spider,
                             project_settings=context.settings, depth=page.get("depth", 0), now=now,
                             fetch_options=options))
    return {**outcome, "status": DONE}


def _page_outcome(context: ProjectContext, page: Page, now: float,
                  new_rows: list[dict[str, Any]]) -> Outcome:
    depth = page.get("depth", 0)
    # a rendered page: response.url is where the browser ended; the row keeps its own URL
    response = Response(page.get("final_url") or page["url"], page["code"], page.get("headers") or {},
                        decompress_body(page), data=page.get("data"), depth=depth,
                        js_result=page.get("js_result"), rendered=bool(page.get("rendered")))
    callback = entry_callback(page)
    result = run_callback(context.spider, callback, response)
    outcome: Outcome = {"id": page["id"], "url": page["url"], "status": DONE, "code": page["code"]}
    if page.get("final_url"):
        outcome["final_url"] = page["final_url"]
    if result.error is not None:
        callback_error_log().report(context.name, page["url"], f"{type(context.spider).__name__}.{callback}",
                                    result.error, result.exception)
        return {**outcome, "status": FAILED, "kind": "callback", "error": result.error}
    kept, _dropped = filter_requests(context.spider, result.requests, depth, context.max_depth)
    for url, request in kept:
        new_rows.append(task_row(context.name, url, request, spider=context.spider,
                                 project_settings=context.settings, depth=depth + 1, now=now))
    headers = page.get("headers") or {}
    if headers.get("etag"):
        outcome["etag"] = headers["etag"]
    if headers.get("last-modified"):
        outcome[LAST_MODIFIED] = headers["last-modified"]
    return {**outcome, "status": DONE, "items": result.items}


def process_pages(engine: Engine, project: str, pages: list[Page]) -> tuple[list[Outcome], int]:
    """Run callbacks on ``pages``; insert their new rows in one round trip; return the
    outcomes for the store stage and how many new rows were added."""
    now = time.time()
    try:
        context = project_context(engine, project)
    except (ConfigurationError, ProjectNotFound) as exc:
        return [{"id": p["id"], "url": p["url"], "code": p.get("code"), "status": FAILED, "kind": "spider",
                 "error": str(exc)} for p in pages], 0
    new_rows: list[dict[str, Any]] = []
    outcomes, spider_pages = robots_outcomes(pages)  # a robots.txt is the scheduler's, for no spider
    for page in spider_pages:
        if "redirect" in page:
            outcome = _redirect_outcome(context, page, now, new_rows)
        else:
            outcome = _page_outcome(context, page, now, new_rows)
        outcomes.append(carry_cost(page, outcome))  # what the page cost, for the store stage's statistics
    added = 0
    generation = (project, context.created_at)
    new_rows = [row for row in new_rows if not _known.seen(generation, row)]
    with engine.begin() as conn:
        if new_rows:
            added = tasks.insert_tasks(conn, project, new_rows, max_pages=context.max_pages)
        claims.mark_fetched(conn, [p["id"] for p in pages], now=now)
    if new_rows and context.max_pages is None:  # beyond a budget a row may not have been inserted
        _known.remember(generation, new_rows)
    return outcomes, added


class KnownTasks:
    """Task ids this process already sent to the frontier, so the links every page repeats
    do not go to the database again. Only plain rows are skipped: a row with an itag, an
    age, force_update or cancel must reach the database, which decides what it means. The
    database stays the judge; this only saves it work (and forgets the oldest ids first)."""

    def __init__(self, max_ids: int = 200_000) -> None:
        self.max_ids = max_ids
        self._ids: OrderedDict[tuple[Any, str], None] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _plain(row: dict[str, Any]) -> bool:
        return (row.get("itag") is None and row.get("age") is None and not row.get("_force")
                and not row.get("_cancel"))

    def seen(self, generation: Any, row: dict[str, Any]) -> bool:
        return self._plain(row) and (generation, row["task_id"]) in self._ids

    def remember(self, generation: Any, rows: list[dict[str, Any]]) -> None:
        with self._lock:
            for row in rows:
                if self._plain(row):
                    self._ids[(generation, row["task_id"])] = None
            while len(self._ids) > self.max_ids:
                self._ids.popitem(last=False)


_known = KnownTasks()
