"""store: write a batch of page outcomes and items with workers.store, in one transaction."""

from __future__ import annotations

from crawlcluster import settings
from crawlcluster.app import app, database_outage_retry
from crawlcluster.db import get_engine
from crawlcluster.messages import StoreMessage
from crawlcluster.stages import STORE
from workers.store import store_pages


@app.task(name=STORE.task, acks_late=True, ignore_result=True,
          **database_outage_retry(settings.current()))
def store(message: StoreMessage) -> dict[str, int]:
    return store_pages(get_engine(), message["project"], message["pages"])
