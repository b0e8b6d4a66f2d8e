"""render: render a batch of URLs in this worker's browser with workers.browser.renderer, send the
pages to parse (the same shape as fetched pages) and failures to store, and record the
browser's counters. The browser starts on the first render task, so workers that never
get one (fetch, parse, store) never start Chromium, and it is closed when the worker
process exits."""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import signals

from crawlcluster.app import app
from crawlcluster.db import get_engine
from crawlcluster.messages import compress_body
from crawlcluster.messages import send as send_message
from crawlcluster.schema import FAILED
from crawlcluster.stages import PARSE, RENDER, STORE
from workers.browser.renderer import RenderResult, close_renderer, get_renderer
from workers.fetcher import is_retryable
from workers.render_store import record_render_worker, save_screenshots

logger = logging.getLogger(__name__)

_started_at = time.time()


def page_message(result: RenderResult) -> dict[str, Any]:
    """A rendered page as the parse stage needs it: a fetched page's keys, plus ``rendered``,
    ``final_url`` (after client-side redirects), ``js_result`` and ``screenshot`` (its size;
    the PNG itself is stored by this task)."""
    entry = result.entry
    page: dict[str, Any] = {"id": entry["id"], "url": entry["url"], "code": result.status, "rendered": True}
    for key in ("depth", "cb", "data", "fetch"):
        if key in entry:
            page[key] = entry[key]
    page["headers"] = result.headers
    page["body"], page["z"] = compress_body(result.body)
    page["wire_bytes"] = len(result.body)
    page["browser_seconds"] = round(result.elapsed_seconds, 4)  # the crawl's browser cost
    if result.final_url and result.final_url != entry["url"]:
        page["final_url"] = result.final_url
    if result.js_result is not None:
        page["js_result"] = result.js_result
    if result.screenshot:
        page["screenshot"] = len(result.screenshot)
    return page


def failure_message(result: RenderResult) -> dict[str, Any]:
    """A failed render as the store stage records it, retried like a failed fetch (a
    timeout or 5xx is worth another try; a crash was already rendered twice)."""
    error = result.error
    assert error is not None
    message = {"id": result.entry["id"], "url": result.entry["url"], "status": FAILED,
               "code": error.status_code, "error": str(error), "kind": error.kind,
               "browser_seconds": round(result.elapsed_seconds, 4)}
    if is_retryable(error.kind, error.status_code):
        message["retry"] = True
    if result.entry.get("cb"):
        message["cb"] = result.entry["cb"]
    return message


@app.task(name=RENDER.task, bind=True, acks_late=True, ignore_result=True)
def render(self: Any, message: dict[str, Any]) -> dict[str, int]:
    project = message["project"]
    renderer = get_renderer()
    results = renderer.render_many(message["tasks"])
    pages = [page_message(r) for r in results if r.ok]
    failures = [failure_message(r) for r in results if not r.ok]
    engine = get_engine()
    shots = [(r.entry["id"], r.entry["url"], r.screenshot) for r in results if r.ok and r.screenshot]
    save_screenshots(engine, project, shots)  # before parse can mark the row done
    with app.producer_or_acquire() as producer:
        if pages:
            send_message(app, PARSE.task, {"project": project, "pages": pages}, producer=producer)
        if failures:
            send_message(app, STORE.task, {"project": project, "pages": failures}, producer=producer)
    try:
        record_render_worker(engine, self.request.hostname or "render", renderer.stats(), _started_at)
    except Exception:  # noqa: BLE001 - counters must never fail a batch that was rendered
        logger.exception("could not record the render worker's counters")
    return {"rendered": len(pages), "failed": len(failures)}


@signals.worker_process_shutdown.connect
def _close_browser_in_pool_process(**_kwargs: Any) -> None:
    close_renderer()  # a prefork child exiting: its browser goes with it


@signals.worker_shutdown.connect
def _close_browser_in_worker(**_kwargs: Any) -> None:
    close_renderer()  # threads or solo pool: the browser lives in the main process
