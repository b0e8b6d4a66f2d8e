"""fetch: fetch a batch of URLs with workers.fetcher, send pages to parse and failures to store."""

from __future__ import annotations

import logging
from typing import Any

from celery import signals

from crawlcluster import bodies
from crawlcluster.app import app
from crawlcluster.db import get_engine
from crawlcluster.messages import (
    FetchMessage,
    Outcome,
    Page,
    failure_message,
    not_modified_message,
    page_message,
)
from crawlcluster.publish import send as send_message
from crawlcluster.stages import FETCH, PARSE, STORE
from workers.fetch_errors import is_retryable
from workers.fetcher import FetchResult, close_fetcher, get_fetcher
from workers.lease import hand_on, hold_batch

logger = logging.getLogger(__name__)


def page_of(result: FetchResult) -> Page:
    """A fetched page (or redirect) as the parse stage needs it."""
    return page_message(result.entry, result.status, result.headers, result.body,
                        seconds=result.elapsed_seconds,
                        wire_bytes=result.wire_bytes, redirect_to=result.redirect_to,
                        compress=False)  # bodies.stash compresses the wave's bodies together


def failure_of(result: FetchResult) -> Outcome:
    """A failed fetch as the store stage records it."""
    error = result.error
    assert error is not None
    return failure_message(result.entry, error, seconds=result.elapsed_seconds,
                           retry=is_retryable(error.kind, error.status_code))


@app.task(name=FETCH.task, acks_late=True, ignore_result=True)
def fetch(message: FetchMessage) -> dict[str, int]:
    """Fetch the batch and hand results on as they finish (in waves), so a page that hangs
    until its timeout does not hold back the pages fetched with it, nor their retries. Rows
    ended or sent again since this message was sent (a redelivery) are not fetched."""
    project = message["project"]
    engine = get_engine()
    entries = hold_batch(engine, project, "fetch", message["tasks"])
    fetched = not_fetched = 0
    trust = message.get("trust") or ()  # what the address guard lets this project reach although private
    for results in get_fetcher().fetch_waves(entries, trust=trust) if entries else ():
        pages = [page_of(r) for r in results if r.ok and r.status != 304]
        failures = [failure_of(r) for r in results if not r.ok]
        # not modified since the last fetch: the row is fresh again, nothing to parse or store
        failures += [not_modified_message(r.entry, r.elapsed_seconds)
                     for r in results if r.ok and r.status == 304]
        with app.producer_or_acquire() as producer:
            if pages:
                parse_message = bodies.stash(app, producer, {"project": project, "pages": pages})
                send_message(app, PARSE.task, parse_message, producer=producer)
            if failures:
                send_message(app, STORE.task, {"project": project, "pages": failures}, producer=producer)
        hand_on(engine, pages, failures)  # held again by the worker that receives them
        fetched += len(pages)
        not_fetched += len(failures)
    return {"fetched": fetched, "not_fetched": not_fetched}


@signals.worker_process_shutdown.connect
@signals.worker_shutdown.connect
def _close_fetcher(**_kwargs: Any) -> None:
    """A stopping worker (or pool child) closes its HTTP client and loop thread."""
    close_fetcher()
