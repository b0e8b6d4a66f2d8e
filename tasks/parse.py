"""parse: run spider callbacks on a batch of pages with workers.parser, then hand the
outcomes and items to store. Pages of ``render="auto"`` rows that turn out to need a
browser go to render instead (workers.autorender), their rows still queued."""

from __future__ import annotations

from crawlcluster.app import app
from crawlcluster.db import get_engine
from crawlcluster.messages import ParseMessage
from crawlcluster.publish import send as send_message
from crawlcluster.stages import PARSE, RENDER, STORE
from workers.autorender import split_for_render
from workers.lease import hold_batch
from workers.parser import process_pages


@app.task(name=PARSE.task, acks_late=True, ignore_result=True)
def parse(message: ParseMessage) -> dict[str, int]:
    project = message["project"]
    engine = get_engine()
    # pages whose rows were ended or sent again since (a late or redelivered message) are dropped
    pages = hold_batch(engine, project, "parse", message["pages"])
    to_render, pages = split_for_render(engine, project, pages)
    if to_render:
        send_message(app, RENDER.task, {"project": project, "tasks": to_render})
    if not pages:
        return {"pages": 0, "new_urls": 0, "sent_to_render": len(to_render)}
    outcomes, added = process_pages(engine, project, pages)
    send_message(app, STORE.task, {"project": project, "pages": outcomes})
    return {"pages": len(outcomes), "new_urls": added, "sent_to_render": len(to_render)}
