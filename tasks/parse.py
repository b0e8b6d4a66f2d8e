"""parse: run spider callbacks on a batch of pages with workers.processor, then hand the
outcomes and items to store."""

from __future__ import annotations

from typing import Any

from crawlcluster.app import app
from crawlcluster.db import get_engine
from workers.processor import process_pages


@app.task(name="crawlcluster.parse", acks_late=True, ignore_result=True)
def parse(message: dict[str, Any]) -> dict[str, int]:
    project = message["project"]
    outcomes, added = process_pages(get_engine(), project, message["pages"])
    app.send_task("crawlcluster.store", args=[{"project": project, "pages": outcomes}])
    return {"pages": len(outcomes), "new_urls": added}
