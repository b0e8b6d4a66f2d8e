"""render="auto" in the parse stage: pick out the fetched pages that need a browser, and learn
per host, callback and URL shape which pages do by comparing samples rendered both ways.

A page fetched for a ``render="auto"`` row goes to the render queue (the same row, same task
id, still queued) instead of being parsed when:

* the spider's ``needs_render(response)`` says yes (the first guess: a script wall, an empty
  shell); its key (host, callback, shape) is then remembered as ``render``;
* its key is already known to need a browser (``render_hosts``, shared by every parse worker
  and the scheduler, which sends such rows straight to render);
* it is a **sample**: its key is still being learned (each page of it, until
  ``render_auto_agreements`` samples agreed), or it is learned as plain and the page falls in
  the ``render_auto_recheck_rate`` share. The callback runs on the plain page here; what it
  found (its item count and its same-site links, hashed) rides with the row to render.

When a rendered sample comes back, the callback runs on the rendered page too and the two
are compared (:func:`learn_from_samples`): more items or a same-site link the plain page did
not have is a mismatch, and the key is rendered from then on. Either way the row is parsed
from its rendered version, once, so the links only scripts write are followed without a
second crawl of the page; the parse reuses the callback's run on the rendered page, so the
callback runs once on it and the pipelines once per stored page.

When a key turns ``render`` after pages of it were parsed from a plain fetch (a re-check's
mismatch, or ``needs_render`` on a key learned plain), :func:`rerender_pages_of` sends those
pages (noted by the store stage in ``render_pages_plain``) through the browser once more,
``render_auto_rerender_max`` of them at most.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

from sqlalchemy.engine import Engine

from crawlcluster import settings
from crawlcluster.database.render import LEARNING, PLAIN, RENDER, record_sample, rerender_plain_pages
from crawlcluster.errors import ConfigurationError, InvalidURL, ProjectNotFound
from crawlcluster.http import Response
from crawlcluster.messages import FetchEntry, Page, entry_callback, page_entry
from crawlcluster.rendering import REFRESH_SECONDS, RenderHostMemory, remember_render_host, render_key
from crawlcluster.spider import Spider
from crawlcluster.urls import normalize_url, url_host
from workers.callbacks import CallbackOutcome, run_callback
from workers.parser import page_response, project_context

logger = logging.getLogger(__name__)

# the fetch option a sample's row carries to render and back: what the plain page gave
SAMPLE = "auto_sample"

_memories: dict[str, RenderHostMemory] = {}


def _memory(engine: Engine) -> RenderHostMemory:
    key = str(engine.url)
    if key not in _memories:
        _memories[key] = RenderHostMemory(engine)
    return _memories[key]


def _is_candidate(page: Page) -> bool:
    return ((page.get("fetch") or {}).get("render") == "auto" and not page.get("rendered")
            and "redirect" not in page and page.get("code") is not None)


def _link_hash(url: str) -> str:
    return hashlib.blake2b(url.encode(), digest_size=6).hexdigest()


def callback_summary(spider: Spider, project: str, page: Page) -> dict[str, Any] | None:
    """What the page's callback finds on ``page``: ``{"items": n, "links": [hash, ...]}``
    (its same-site links, normalised, hashed short); None when the callback raised."""
    result = run_callback(spider, entry_callback(page), page_response(page), project=project)
    return summary_of(result, page)


def summary_of(result: CallbackOutcome, page: Page) -> dict[str, Any] | None:
    """:func:`callback_summary` of a callback run already made on ``page``."""
    if result.error is not None:
        return None
    host = url_host(page["url"])
    links = set()
    for request in result.requests:
        try:
            url = normalize_url(request.url)
        except InvalidURL:
            continue
        if url_host(url) == host:
            links.add(_link_hash(url))
    return {"items": len(result.items), "links": sorted(links)}


def sampled(url: str, rate: float) -> bool:
    """Whether ``url`` falls in the ``rate`` share: by its hash, so a redelivered page decides alike."""
    if rate <= 0:
        return False
    return int(hashlib.blake2b(url.encode(), digest_size=4).hexdigest(), 16) / 0xFFFFFFFF < rate


def split_for_render(engine: Engine, project: str, pages: list[Page]) -> tuple[list[FetchEntry], list[Page]]:
    """``(render entries, pages to parse)``: the pages that go to render (they need a
    browser, or are samples to compare), as render message entries; every other page is
    returned untouched, in order."""
    if not any(_is_candidate(page) for page in pages):
        return [], pages
    try:
        spider = project_spider(engine, project)
    except (ConfigurationError, ProjectNotFound):
        return [], pages  # the parse stage reports it on every page
    memory = _memory(engine)
    recheck_rate = settings.current().render_auto_recheck_rate
    to_render: list[FetchEntry] = []
    keep: list[Page] = []
    needed_keys: dict[tuple[str, str, str], str] = {}
    for page in pages:
        if not _is_candidate(page):
            keep.append(page)
            continue
        key = render_key(page["url"], entry_callback(page))
        try:
            needed = bool(spider.needs_render(page_response(page)))
        except Exception:  # noqa: BLE001 - a broken hook means "parse it as fetched"
            logger.exception("%s.needs_render raised on %s; parsing the page as fetched",
                             type(spider).__name__, page["url"])
            needed = False
        decision = memory.decision(project, key)
        if needed or decision == RENDER:
            to_render.append(page_entry(page))
            if needed and decision != RENDER:
                needed_keys.setdefault(key, page["url"])
            continue
        if decision == PLAIN and not sampled(page["url"], recheck_rate):
            keep.append(page)
            continue
        summary = callback_summary(spider, project, page)  # a sample: learning, or a re-check
        if summary is None:
            keep.append(page)  # the callback raised: parsed as fetched, where its error is recorded
            continue
        entry = page_entry(page)
        entry["fetch"] = {**entry.get("fetch", {}), SAMPLE: summary}
        to_render.append(entry)
    if needed_keys:
        reason = f"{type(spider).__name__}.needs_render"
        with engine.begin() as conn:
            flipped = [key for key, url in needed_keys.items()
                       if remember_render_host(conn, project, key, url, reason)]
        for key in needed_keys:
            memory.learned(project, key, RENDER)
        for key in flipped:
            rerender_pages_of(engine, project, key)
    return to_render, keep


def rerender_pages_of(engine: Engine, project: str, key: tuple[str, str, str]) -> int:
    """``key`` was just found to need a browser: its pages parsed from a plain fetch are
    rendered and parsed again (``render_auto_rerender_max`` of them at most), so the links
    only scripts write on them are followed. Their rows become pending, due once every
    scheduler has seen the new decision (it reads ``render_hosts`` every
    ``REFRESH_SECONDS``), so they go straight to render, not to a second plain fetch.
    Returns how many were sent again."""
    now, limit = time.time(), settings.current().render_auto_rerender_max
    with engine.begin() as conn:
        reopened, skipped = rerender_plain_pages(conn, project, key, limit, due_at=now + 2 * REFRESH_SECONDS,
                                                 now=now)
    if reopened or skipped:
        logger.info("project %s: %s%s (callback %s) needs a browser: %d pages parsed from a plain fetch are "
                    "rendered and parsed again%s", project, key[0], key[2], key[1], reopened,
                    f", {skipped} more are left as parsed (render_auto_rerender_max={limit})"
                    if skipped else "")
    return reopened


Ran = dict[str, tuple[Response, CallbackOutcome]]


def learn_from_samples(engine: Engine, project: str, pages: list[Page]) -> tuple[list[Page], Ran]:
    """Compare the rendered samples among ``pages`` with what their plain versions gave and
    count each in its key's row; ``pages`` come back without the sample option, to be parsed
    (from the rendered version) as any rendered page is, with the callback's run on each
    rendered sample (by task id): the parse reuses it, so the callback runs on the rendered
    page once and its pipelines and side effects happen once per stored page."""
    ran: Ran = {}
    samples = [page for page in pages if page.get("rendered") and SAMPLE in (page.get("fetch") or {})]
    if not samples:
        return pages, ran
    try:
        spider = project_spider(engine, project)
    except (ConfigurationError, ProjectNotFound):
        return pages, ran
    agreements = settings.current().render_auto_agreements
    memory = _memory(engine)
    out: list[Page] = []
    for page in pages:
        fetch = page.get("fetch") or {}
        if SAMPLE not in fetch or not page.get("rendered"):
            out.append(page)
            continue
        plain = fetch[SAMPLE]
        page = {**page, "fetch": {k: v for k, v in fetch.items() if k != SAMPLE}}
        out.append(page)
        response = page_response(page)
        result = run_callback(spider, entry_callback(page), response, project=project)
        ran[page["id"]] = (response, result)
        rendered = summary_of(result, page)
        if rendered is None:
            continue  # the callback raised on the rendered page: no comparison (the parse records it)
        more_items = rendered["items"] - plain["items"]
        more_links = len(set(rendered["links"]) - set(plain["links"]))
        agreed = more_items <= 0 and more_links == 0
        key = render_key(page["url"], entry_callback(page))
        reason = (f"a sample rendered found {more_links} more same-site links and {max(0, more_items)} more "
                  f"items than fetched plainly") if not agreed else "samples agreed"
        values = {"project": project, "host": key[0], "callback": key[1], "shape": key[2],
                  "first_url": page["url"], "reason": reason, "created_at": time.time()}
        with engine.begin() as conn:
            decision = record_sample(conn, values, agreed, agreements)
        memory.learned(project, key, decision)
        if not agreed:
            logger.info("project %s: %s%s (callback %s) needs a browser: %s (%s)", project, key[0], key[2],
                        key[1], reason, page["url"])
            rerender_pages_of(engine, project, key)  # after the commit: see database.render
        elif decision == LEARNING:
            logger.debug("project %s: %s agreed rendered and plain", project, page["url"])
    return out, ran


def project_spider(engine: Engine, project: str) -> Spider:
    """The project's spider, as the parse engine caches it."""
    return project_context(engine, project).spider
