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

from crawlcluster import settings
from crawlcluster.app import app, database_outage_retry
from crawlcluster.db import get_engine
from crawlcluster.messages import FetchMessage, Outcome, Page, failure_message, page_message
from crawlcluster.publish import send as send_message
from crawlcluster.stages import PARSE, RENDER, STORE
from workers.browser.renderer import RenderResult, close_renderer, get_renderer
from workers.fetch_errors import is_retryable
from workers.lease import hand_on, hold_batch
from workers.render_store import record_render_worker, save_screenshots

logger = logging.getLogger(__name__)

_started_at = time.time()


def page_of(result: RenderResult) -> Page:
    """A rendered page as the parse stage needs it: a fetched page's keys, plus where the
    browser ended, its script's result and its screenshot's size (the PNG is stored here)."""
    return page_message(result.entry, result.status, result.headers, result.body,
                        seconds=result.elapsed_seconds, wire_bytes=len(result.body), rendered=True,
                        final_url=result.final_url,
                        js_result=result.js_result, screenshot_bytes=len(result.screenshot or b""))


def failure_of(result: RenderResult) -> Outcome:
    """A failed render, retried like a failed fetch (a timeout or 5xx is worth another try;
    a crash was already rendered twice)."""
    error = result.error
    assert error is not None
    return failure_message(result.entry, error, seconds=result.elapsed_seconds,
                           retry=is_retryable(error.kind, error.status_code), rendered=True)


@app.task(name=RENDER.task, bind=True, acks_late=True, ignore_result=True,
          **database_outage_retry(settings.current()))
def render(self: Any, message: FetchMessage) -> dict[str, int]:
    project = message["project"]
    engine = get_engine()
    entries = hold_batch(engine, project, "render", message["tasks"])  # not what was ended since
    if not entries:
        return {"rendered": 0, "failed": 0}
    renderer = get_renderer()
    # the project's start hosts and allow_private: what its pages may reach besides public addresses
    results = renderer.render_many(entries, trust=message.get("trust", []))
    pages = [page_of(r) for r in results if r.ok]
    failures = [failure_of(r) for r in results if not r.ok]
    shots = [(r.entry["id"], r.entry["url"], r.screenshot) for r in results if r.ok and r.screenshot]
    save_screenshots(engine, project, shots)  # before parse can mark the row done
    with app.producer_or_acquire() as producer:
        if pages:
            send_message(app, PARSE.task, {"project": project, "pages": pages}, producer=producer)
        if failures:
            send_message(app, STORE.task, {"project": project, "pages": failures}, producer=producer)
    hand_on(engine, pages, failures)  # held again by the worker that receives them
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
