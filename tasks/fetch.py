"""fetch: fetch a batch of URLs with workers.fetcher, send pages to parse and failures to store."""

from __future__ import annotations

import logging
from typing import Any

from celery import signals

from crawlcluster.app import app
from crawlcluster.messages import compress_body
from crawlcluster.messages import send as send_message
from crawlcluster.schema import DONE, FAILED
from crawlcluster.stages import FETCH, PARSE, STORE
from workers.fetcher import FetchResult, close_fetcher, get_fetcher, is_retryable

logger = logging.getLogger(__name__)


def page_message(result: FetchResult) -> dict[str, Any]:
    """A fetched page (or redirect) as the parse stage needs it."""
    entry = result.entry
    page: dict[str, Any] = {"id": entry["id"], "url": entry["url"], "code": result.status}
    for key in ("depth", "cb", "data", "fetch"):
        if key in entry:
            page[key] = entry[key]
    page["fetch_seconds"] = round(result.elapsed_seconds, 4)
    if result.redirect_to is not None:
        page["redirect"] = result.redirect_to
        return page
    page["headers"] = {k: v for k, v in result.headers.items() if k != "location"}
    page["body"], page["z"] = compress_body(result.body)
    page["wire_bytes"] = result.wire_bytes
    return page


def failure_message(result: FetchResult) -> dict[str, Any]:
    """A failed fetch as the store stage records it; ``retry`` marks the ones worth another try."""
    error = result.error
    assert error is not None
    message = {"id": result.entry["id"], "url": result.entry["url"], "status": FAILED,
               "code": error.status_code, "error": str(error), "kind": error.kind,
               "fetch_seconds": round(result.elapsed_seconds, 4)}
    if is_retryable(error.kind, error.status_code):
        message["retry"] = True
        if error.retry_after_seconds is not None:
            message["retry_after"] = error.retry_after_seconds
    if result.entry.get("cb"):
        message["cb"] = result.entry["cb"]
    return message


@app.task(name=FETCH.task, acks_late=True, ignore_result=True)
def fetch(message: dict[str, Any]) -> dict[str, int]:
    """Fetch the batch and hand results on as they finish (in waves), so a page that hangs
    until its timeout does not hold back the pages fetched with it, nor their retries."""
    project = message["project"]
    fetched = not_fetched = 0
    for results in get_fetcher().fetch_waves(message["tasks"]):
        pages = [page_message(r) for r in results if r.ok and r.status != 304]
        failures = [failure_message(r) for r in results if not r.ok]
        # not modified since the last fetch: the row is fresh again, nothing to parse or store
        failures += [{"id": r.entry["id"], "url": r.url, "status": DONE, "code": 304, "not_modified": True,
                      "fetch_seconds": round(r.elapsed_seconds, 4)}
                     for r in results if r.ok and r.status == 304]
        with app.producer_or_acquire() as producer:
            if pages:
                send_message(app, PARSE.task, {"project": project, "pages": pages}, producer=producer)
            if failures:
                send_message(app, STORE.task, {"project": project, "pages": failures}, producer=producer)
        fetched += len(pages)
        not_fetched += len(failures)
    return {"fetched": fetched, "not_fetched": not_fetched}


@signals.worker_process_shutdown.connect
@signals.worker_shutdown.connect
def _close_fetcher(**_kwargs: Any) -> None:
    """A stopping worker (or pool child) closes its HTTP client and loop thread."""
    close_fetcher()
