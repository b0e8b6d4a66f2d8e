"""fetch: fetch a batch of URLs with workers.fetcher, send pages to parse and failures to store."""

from __future__ import annotations

import logging
from typing import Any

from crawlcluster.app import app
from crawlcluster.messages import compress_body
from crawlcluster.schema import FAILED
from workers.fetcher import FetchResult, get_fetcher

logger = logging.getLogger(__name__)


def page_message(result: FetchResult) -> dict[str, Any]:
    """A fetched page (or redirect) as the parse stage needs it."""
    entry = result.entry
    page: dict[str, Any] = {"id": entry["id"], "url": entry["url"], "code": result.status}
    for key in ("depth", "cb", "data", "fetch"):
        if key in entry:
            page[key] = entry[key]
    if result.redirect_to is not None:
        page["redirect"] = result.redirect_to
        return page
    page["headers"] = {k: v for k, v in result.headers.items() if k != "location"}
    page["body"], page["z"] = compress_body(result.body)
    page["wire_bytes"] = result.wire_bytes
    return page


def failure_message(result: FetchResult) -> dict[str, Any]:
    assert result.error is not None
    return {"id": result.entry["id"], "url": result.entry["url"], "status": FAILED,
            "code": result.error.status_code, "error": str(result.error)}


@app.task(name="crawlcluster.fetch", acks_late=True, ignore_result=True)
def fetch(message: dict[str, Any]) -> dict[str, int]:
    project = message["project"]
    results = get_fetcher().fetch_many(message["tasks"])
    pages = [page_message(r) for r in results if r.ok]
    failures = [failure_message(r) for r in results if not r.ok]
    with app.producer_or_acquire() as producer:
        if pages:
            app.send_task("crawlcluster.parse", args=[{"project": project, "pages": pages}], producer=producer)
        if failures:
            app.send_task("crawlcluster.store", args=[{"project": project, "pages": failures}], producer=producer)
    return {"fetched": len(pages), "failed": len(failures)}
