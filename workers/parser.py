"""The parse stage's engine: run spider callbacks on a batch of pages, add their new URLs to
the frontier in one statement, and return each page's outcome and items for the store stage.

``tasks/parse.py`` calls :func:`process_pages`, as ``tasks/fetch.py`` calls
``workers/fetcher.py``. Each page reaches its callback as a
:class:`~crawlcluster.http.Response`; :func:`workers.callbacks.run_callback` sorts what the
callback yields into items and requests, and :func:`workers.callbacks.filter_requests` keeps
the normalised, on-site ones within the depth limit. Spiders are loaded by import path once
per process and project (refreshed every few seconds, so a project's settings can change
while it runs). Redirects arrive here as pages with a ``redirect`` target: the target
becomes a row of its own, carrying the chain so far, which is how loops and over-long chains
are caught. A host's robots.txt, which the scheduler asked for, is taken out of the batch
first (:func:`workers.robots.robots_outcomes`), before the spider is loaded: no spider sees
it, and a project whose spider cannot be loaded still records its host's robots.txt. Such a
project is stopped once (:mod:`workers.broken_spiders`).
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from crawlcluster import settings
from crawlcluster.database import claims, tasks
from crawlcluster.database import projects as lifecycle
from crawlcluster.errors import ConfigurationError, InvalidURL, ProjectNotFound
from crawlcluster.http import Request, Response
from crawlcluster.messages import (
    LAST_MODIFIED,
    PLAIN_KEY,
    Outcome,
    Page,
    carry_cost,
    decompress_body,
    entry_callback,
)
from crawlcluster.pipelines import pipeline_classes
from crawlcluster.rendering import render_key
from crawlcluster.request_rows import RowMaker, task_row
from crawlcluster.schema import DONE, FAILED
from crawlcluster.spider import Spider, load_spider_class
from crawlcluster.urls import host_port, host_problem, length_problem, normalize_url, short_url
from workers.broken_spiders import SPIDER_FAILURE_KIND, remembered_failure, stop_project
from workers.callback_log import callback_error_log
from workers.callbacks import (
    LINKS_DUPLICATE,
    LINKS_OFFSITE,
    MAX_ETAG_LENGTH,
    MAX_LAST_MODIFIED_LENGTH,
    CallbackOutcome,
    filter_requests,
    run_callback,
)
from workers.page_bounds import (
    HTML_DEPTH_CAPPED,
    LINKS_OVER_LIMIT,
    SHAPE_RUN,
    TRAP_KIND,
    TrapGuard,
    count_trap_rows,
)
from workers.pipelines import PIPELINE_KIND, run_pipelines
from workers.robots import robots_outcomes

logger = logging.getLogger(__name__)

PROJECT_CACHE_SECONDS = 5.0


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
    known_failure = remembered_failure(project)
    if known_failure is not None:  # met a moment ago: not imported again
        raise ConfigurationError(known_failure)
    # only from CRAWLCLUSTER_SPIDER_PACKAGES; an exception or SystemExit at import is a ConfigurationError
    spider_cls = load_spider_class(row["spider"])
    spider = spider_cls(**(row["settings"] or {}).get("spider_kwargs", {}))
    pipeline_classes(spider_cls)  # a pipeline path not allowed or not importable stops the project, as above
    context = ProjectContext(project, spider, row["max_depth"], row["max_pages"], time.monotonic(),
                             settings=row["settings"] or {}, created_at=row["created_at"])
    with _contexts_lock:
        _contexts[project] = context
    return context


# request headers that carry credentials: a redirect that leaves the origin drops them
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})


def _origin(url: str) -> tuple[str, str]:
    return url.split("://", 1)[0].lower(), host_port(url)


def without_credentials(options: dict[str, Any]) -> dict[str, Any]:
    """Fetch options for a redirect that leaves its origin (scheme, host, port): without the
    Authorization, Proxy-Authorization and Cookie headers and the cookies a spider set, as
    browsers, httpx, requests and Scrapy do (CVE-2024-3574, CVE-2024-1968)."""
    options = dict(options)
    options.pop("cookies", None)
    if options.get("headers"):
        options["headers"] = {k: v for k, v in options["headers"].items()
                              if k.lower() not in CREDENTIAL_HEADERS}
    return options


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
    problem = length_problem(target, settings.current().max_url_length) or host_problem(target)
    if problem is not None:  # the target is never stored: a row's error shows its start
        logger.info("project %s: %s redirects to a URL that cannot be crawled: %s", context.name,
                    short_url(page["url"]), problem)
        return {**outcome, "status": FAILED, "kind": "redirect",
                "error": f"redirect to a URL that cannot be crawled: {problem}: {short_url(target)}"}
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
    if _origin(target) != _origin(page["url"]):
        options = without_credentials(options)
    options["redirects"] = chain
    if page.get("code") in (301, 302, 303) and options.get("method", "GET") != "GET":
        options.pop("method", None)
        options.pop("body", None)
    request = Request(target, callback=entry_callback(page), data=page.get("data"))
    new_rows.append(task_row(context.name, target, request, spider=context.spider,
                             project_settings=context.settings, depth=page.get("depth", 0), now=now,
                             fetch_options=options))
    return {**outcome, "status": DONE}


def page_response(page: Page) -> Response:
    """The :class:`Response` a callback gets for ``page``; a rendered page's ``url`` is where
    the browser ended (the row keeps its own URL)."""
    return Response(page.get("final_url") or page["url"], page["code"], page.get("headers") or {},
                    decompress_body(page), data=page.get("data"), depth=page.get("depth", 0),
                    js_result=page.get("js_result"), rendered=bool(page.get("rendered")),
                    request=Request.of_row(page["url"], entry_callback(page), page.get("data"),
                                           page.get("fetch")))


def _page_outcome(context: ProjectContext, page: Page, now: float, new_rows: list[dict[str, Any]],
                  dropped_links: list[int], ran: tuple[Response, CallbackOutcome] | None = None,
                  maker: RowMaker | None = None, generation: Any = None, known: list[int] | None = None,
                  ) -> Outcome:
    """``ran``: the response and the callback's run on it, when render="auto" already ran the
    callback on this very page to compare (a sample): reused, so it runs once per stored page.
    ``maker`` builds the links' rows; a plain link this process already sent to the frontier
    (``generation``'s :data:`_known`) gets no row and is counted in ``known[0]``."""
    maker = maker or RowMaker(context.name, context.spider, context.settings, now)
    depth = page.get("depth", 0)
    callback = entry_callback(page)
    if ran is not None:
        response, result = ran
    else:
        response = page_response(page)
        result = run_callback(context.spider, callback, response, project=context.name)
    outcome: Outcome = {"id": page["id"], "url": page["url"], "status": DONE, "code": page["code"]}
    if page.get("final_url"):
        outcome["final_url"] = page["final_url"]
    if result.error is not None:
        callback_error_log().report(context.name, page["url"], f"{type(context.spider).__name__}.{callback}",
                                    result.error, result.exception)
        return {**outcome, "status": FAILED, "kind": "callback", "error": result.error}
    if result.items:  # the spider's item pipelines, in this process (workers.pipelines)
        piped = run_pipelines(context.name, context.created_at, context.spider, context.settings,
                              result.items)
        if piped.error is not None:
            callback_error_log().report(context.name, page["url"], f"pipeline {piped.where}", piped.error,
                                        piped.exception)
            return {**outcome, "status": FAILED, "kind": PIPELINE_KIND, "error": piped.error}
        result.items = piped.items
        if piped.dropped:
            outcome["dropped_items"] = dict(piped.dropped)
    bounds: dict[str, int] = {}
    if result.links_over_limit + response.links_over_limit:
        bounds[LINKS_OVER_LIMIT] = result.links_over_limit + response.links_over_limit
    if response.nesting_capped:
        bounds[HTML_DEPTH_CAPPED] = 1
    kept, dropped = filter_requests(context.spider, result.requests, depth, context.max_depth, counts=bounds)
    if LINKS_OFFSITE in bounds:  # a link filter, not a bound: counted with the duplicates
        outcome["links_filtered"] = {LINKS_OFFSITE: bounds.pop(LINKS_OFFSITE)}
    dropped_links.append(dropped + bounds.get(LINKS_OVER_LIMIT, 0))
    guard = TrapGuard.for_page(page["url"], page.get("fetch"), settings.current())
    for url, request in kept:
        if known is not None:
            plain_id = maker.plain_id(url, request)
            if plain_id is not None and _known.seen_id(generation, plain_id):
                known[0] += 1  # the frontier has it: a duplicate, as the database would say
                continue
        run, trap = guard.check(url)
        options = {**(request.fetch_options() or {}), SHAPE_RUN: run} if run else None
        row = maker.row(url, request, depth + 1, fetch_options=options)
        if trap is not None:  # the link that would continue the trap ends failed, unfetched
            row.update(status=FAILED, error=trap, error_kind=TRAP_KIND, _trap=True)
        new_rows.append(row)
    if bounds:
        outcome["bounds"] = bounds
        logger.info("project %s: %s: page bounds applied: %s", context.name, short_url(page["url"]),
                    ", ".join(f"{name} {count}" for name, count in sorted(bounds.items())))
    headers = page.get("headers") or {}
    if headers.get("etag") and len(headers["etag"]) <= MAX_ETAG_LENGTH:
        outcome["etag"] = headers["etag"]
    if headers.get("last-modified") and len(headers["last-modified"]) <= MAX_LAST_MODIFIED_LENGTH:
        outcome[LAST_MODIFIED] = headers["last-modified"]
    if (page.get("fetch") or {}).get("render") == "auto" and not page.get("rendered"):
        # parsed from a plain fetch: rendered again if its key is found to need a browser
        outcome[PLAIN_KEY] = list(render_key(page["url"], callback))
    return {**outcome, "status": DONE, "items": result.items}


def _failed_page(page: Page, kind: str, error: str) -> Outcome:
    return {"id": page["id"], "url": page["url"], "code": page.get("code"), "status": FAILED, "kind": kind,
            "error": error}


def _processing_error(page: Page, exc: Exception) -> str:
    """A readable sentence for an exception raised while processing ``page`` outside its callback."""
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f" ({frame.filename}:{frame.lineno})" if frame else ""
    return f"processing the page raised {type(exc).__name__}: {exc}{where}"


def process_pages(engine: Engine, project: str, pages: list[Page],
                  ran: dict[str, tuple[Response, CallbackOutcome]] | None = None,
                  ) -> tuple[list[Outcome], int, int]:
    """Run callbacks on ``pages``; insert their new rows in one round trip; return the
    outcomes for the store stage, how many new rows were added and how many links were
    dropped (invalid, too long, off-site, too deep). ``ran``: callback runs already made on
    some of the pages (by task id), used instead of running the callback again.

    One page's trouble fails that page only: an exception while building its outcome or its
    new rows fails it (kind ``parse``), and when the batch's insert fails the pages' rows are
    inserted page by page, so only the page whose rows the database refuses fails."""
    now = time.time()
    # a robots.txt is the scheduler's, for no spider: recorded even when the spider is broken
    outcomes, spider_pages = robots_outcomes(pages)
    if not spider_pages:
        with engine.begin() as conn:
            claims.mark_fetched(conn, [p["id"] for p in pages], now=now)
        return outcomes, 0, 0
    try:
        context = project_context(engine, project)
    except (ConfigurationError, ProjectNotFound) as exc:
        if isinstance(exc, ConfigurationError):  # the spider can never load: the project stops, once
            stop_project(engine, project, str(exc), [p["id"] for p in spider_pages])
        with engine.begin() as conn:
            claims.mark_fetched(conn, [p["id"] for p in pages], now=now)
        failed = [carry_cost(p, _failed_page(p, SPIDER_FAILURE_KIND, str(exc))) for p in spider_pages]
        return outcomes + failed, 0, 0
    generation = (project, context.created_at)
    rows_of: dict[str, list[dict[str, Any]]] = {}  # each page's new rows, by its task id
    by_id: dict[str, Outcome] = {}
    dropped_links: list[int] = []
    produced: dict[str, int] = {}  # each page's new rows before any was found known
    maker = RowMaker(project, context.spider, context.settings, now)
    for page in spider_pages:
        page_rows: list[dict[str, Any]] = []
        known = [0]
        try:
            if "redirect" in page:
                outcome = _redirect_outcome(context, page, now, page_rows)
            else:
                outcome = _page_outcome(context, page, now, page_rows, dropped_links,
                                        (ran or {}).get(page["id"]), maker, generation, known)
        except Exception as exc:  # noqa: BLE001 - one page's trouble must not fail its batch-mates
            logger.warning("parse failed: project %s, url %s", project, page["url"], exc_info=True)
            outcome, page_rows = _failed_page(page, "parse", _processing_error(page, exc)), []
            known[0] = 0
        outcome = carry_cost(page, outcome)  # what the page cost, for the store stage's statistics
        outcomes.append(outcome)
        by_id[page["id"]] = outcome
        produced[page["id"]] = len(page_rows) + known[0]
        rows_of[page["id"]] = [row for row in page_rows if not _known.seen(generation, row)]
    new_rows = [row for rows in rows_of.values() for row in rows]
    new_ids: set[str] = set()
    try:
        with engine.begin() as conn:
            added = tasks.insert_tasks(conn, project, new_rows, max_pages=context.max_pages,
                                       new_ids=new_ids) if new_rows else 0
            claims.mark_fetched(conn, [p["id"] for p in pages], now=now)
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise  # the database itself is in trouble, not one page: the task fails
        logger.warning("project %s: a batch's new rows were refused (%s); inserting them page by page",
                       project, type(exc.orig).__name__)
        added = _insert_page_by_page(engine, context, rows_of, by_id, now, new_ids)
        with engine.begin() as conn:
            claims.mark_fetched(conn, [p["id"] for p in pages], now=now)
    count_trap_rows(rows_of, by_id, new_ids)
    _count_duplicates(by_id, produced, added)
    if new_rows and context.max_pages is None:  # beyond a budget a row may not have been inserted
        _known.remember(generation, [row for tid, rows in rows_of.items() if by_id[tid]["status"] == DONE
                                     for row in rows])
    return outcomes, added, sum(dropped_links)


def _count_duplicates(by_id: dict[str, Outcome], produced: dict[str, int], added: int) -> None:
    """The batch's links that were already in the frontier (or past max_pages), Scrapy's
    ``dupefilter/filtered``: counted on the batch's first done outcome, so the store stage
    counts them once, with that row's state change."""
    done = [outcome for tid, outcome in by_id.items() if outcome["status"] == DONE]
    duplicates = sum(produced[tid] for tid, outcome in by_id.items() if outcome["status"] == DONE) - added
    if done and duplicates > 0:
        done[0].setdefault("links_filtered", {})[LINKS_DUPLICATE] = duplicates


def _insert_page_by_page(engine: Engine, context: ProjectContext, rows_of: dict[str, list[dict[str, Any]]],
                         by_id: dict[str, Outcome], now: float, new_ids: set[str]) -> int:
    """The batch's insert failed: insert each page's rows in a transaction of its own, and fail
    the pages whose rows the database refuses, with its reason."""
    added = 0
    for tid, rows in rows_of.items():
        if not rows:
            continue
        try:
            page_ids: set[str] = set()
            with engine.begin() as conn:
                added += tasks.insert_tasks(conn, context.name, rows, max_pages=context.max_pages,
                                            new_ids=page_ids)
            new_ids |= page_ids
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
            outcome = by_id[tid]
            logger.warning("parse failed: project %s, url %s: its new links could not be stored: %s",
                           context.name, outcome["url"], reason)
            outcome.pop("items", None)
            outcome["status"], outcome["kind"] = FAILED, "parse"
            outcome["error"] = f"the page's {len(rows)} new links could not be stored: {reason}"
    return added


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

    def seen_id(self, generation: Any, task_id: str) -> bool:
        """Whether the plain row ``task_id`` was sent (the caller knows it is plain)."""
        return (generation, task_id) in self._ids

    def remember(self, generation: Any, rows: list[dict[str, Any]]) -> None:
        with self._lock:
            for row in rows:
                if self._plain(row):
                    self._ids[(generation, row["task_id"])] = None
            while len(self._ids) > self.max_ids:
                self._ids.popitem(last=False)


_known = KnownTasks()
