"""parse: run spider callbacks on a batch of pages with workers.parser, then hand the
outcomes and items to store. Pages of ``render="auto"`` rows that turn out to need a
browser go to render instead (workers.autorender), their rows still queued.

A page whose callback takes its worker process down (a crash, ``os._exit``, the OOM killer,
the hard time limit) must not take the queue with it: each run is counted in its rows'
``crashes`` before the callbacks run. Celery gives the message of a lost process back
(``task_reject_on_worker_lost``, and ``acks_on_timeout=False`` here for the hard time limit);
when it comes back with counted crashes, its pages are sent on one message each, so the
innocent ones go through and only the guilty one crashes again, until it has crashed
``max_worker_crashes`` times and ends failed with a sentence that says so.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import signals

from crawlcluster import bodies, settings
from crawlcluster.app import app, database_outage_retry
from crawlcluster.database import claims
from crawlcluster.database.outcomes import note_queued_error
from crawlcluster.db import get_engine
from crawlcluster.messages import FetchMessage, Outcome, Page, ParseMessage, carry_cost, project_trust
from crawlcluster.publish import send as send_message
from crawlcluster.schema import FAILED
from crawlcluster.stages import PARSE, RENDER, STORE
from workers.autorender import learn_from_samples, split_for_render
from workers.lease import hand_on, hold_batch
from workers.parser import process_pages, project_context
from workers.pipelines import close_pipelines

logger = logging.getLogger(__name__)

# past the soft limit the running callback gets SoftTimeLimitExceeded (its page fails); a
# callback that swallows it or hangs in C code is killed this much later
HARD_LIMIT_GRACE_SECONDS = 10.0
_time_limit = settings.current().parse_time_limit_seconds


def crash_outcome(page: Page, crashes: int, max_crashes: int) -> Outcome:
    """The failed outcome of a page that took its worker process down ``crashes`` times."""
    return carry_cost(page, {
        "id": page["id"], "url": page["url"], "code": page.get("code"), "status": FAILED, "kind": "crash",
        "error": f"the parse worker process died while processing this page, {crashes} times (killed by a "
                 f"signal, os._exit, the OOM killer or the hard time limit of {_time_limit:g}s; "
                 f"max_worker_crashes={max_crashes})"})


@app.task(name=PARSE.task, acks_late=True, ignore_result=True, soft_time_limit=_time_limit,
          time_limit=_time_limit + HARD_LIMIT_GRACE_SECONDS, acks_on_timeout=False,
          **database_outage_retry(settings.current()))
def parse(message: ParseMessage) -> dict[str, int]:
    project = message["project"]
    engine = get_engine()
    try:
        loaded = bodies.load(app, message)  # the bodies, from their Redis key when they travel in one
    except bodies.BodiesMissing as exc:
        # nothing to parse: the rows stay queued, say why, and are sent again at their deadline
        logger.warning("project %s: %s; %d rows wait for their deadline", project, exc, len(message["pages"]))
        with engine.begin() as conn:
            note_queued_error(conn, [p["id"] for p in message["pages"]], str(exc), "parse")
        return {"pages": 0, "new_urls": 0, "bodies_missing": len(message["pages"])}
    result = _parse_pages(project, engine, loaded)
    bodies.drop(app, message)  # the outcomes are on their way to store (a retry raised before this)
    return result


def _parse_pages(project: str, engine: Any, pages: list[Page]) -> dict[str, int]:
    # pages whose rows were ended or sent again since (a late or redelivered message) are dropped
    pages = hold_batch(engine, project, "parse", pages)
    to_render, pages = split_for_render(engine, project, pages)
    if to_render:
        # the render stage's address guard trusts what the scheduler's messages trust
        render_message: FetchMessage = {"project": project, "tasks": to_render}
        if trust := project_trust(project_context(engine, project).settings):
            render_message["trust"] = trust
        send_message(app, RENDER.task, render_message)
        hand_on(engine, to_render)
    if not pages:
        return {"pages": 0, "new_urls": 0, "sent_to_render": len(to_render)}
    max_crashes = settings.current().max_worker_crashes
    with engine.begin() as conn:  # one transaction: the crash counts, and this run counted in them
        crashes = claims.parse_crashes(conn, [p["id"] for p in pages])
        # a redelivered message whose rows ended meanwhile has nothing left to do
        pages = [p for p in pages if p["id"] in crashes]
        split = len(pages) > 1 and any(crashes[p["id"]] for p in pages)
        if pages and not split and all(crashes[p["id"]] < max_crashes for p in pages):
            claims.begin_parse(conn, [p["id"] for p in pages])
    if split:
        # a run of this batch took its process down: each page alone, so one kills only itself
        logger.warning("project %s: a parse of %d pages took its worker process down; sending them on one by "
                       "one", project, len(pages))
        with app.producer_or_acquire() as producer:
            for page in pages:
                one = bodies.stash(app, producer, {"project": project, "pages": [page]})
                send_message(app, PARSE.task, one, producer=producer)
        hand_on(engine, pages)
        return {"pages": 0, "new_urls": 0, "sent_to_render": len(to_render), "split": len(pages)}
    poisoned = [p for p in pages if crashes[p["id"]] >= max_crashes]
    if poisoned:
        for page in poisoned:
            logger.warning("project %s: %s took its parse worker process down %d times; failed", project,
                           page["url"], crashes[page["id"]])
        send_message(app, STORE.task, {"project": project, "pages": [
            crash_outcome(p, crashes[p["id"]], max_crashes) for p in poisoned]})
        hand_on(engine, poisoned)
        return {"pages": len(poisoned), "new_urls": 0, "sent_to_render": len(to_render)}
    if not pages:
        return {"pages": 0, "new_urls": 0, "sent_to_render": len(to_render)}
    ids = [p["id"] for p in pages]
    try:
        # rendered samples of render="auto": compared, counted as begun parses (their callback
        # runs here), and their callback runs reused by the parse
        pages, ran = learn_from_samples(engine, project, pages)
        outcomes, added, dropped = process_pages(engine, project, pages, ran)
    except Exception as exc:
        # the rows stay queued and are sent again at their deadline, up to max_dispatches
        # times; they say why meanwhile, and end with this text
        error = f"the parse task raised {type(exc).__name__}: {exc}"
        try:
            with engine.begin() as conn:
                note_queued_error(conn, ids, error, "parse")
                claims.mark_fetched(conn, ids)  # the run ended: no crash, and the host's slots are free
        except Exception:  # noqa: BLE001 - the database may be what failed; the deadline still holds
            logger.warning("project %s: could not note the parse error on %d rows", project, len(ids),
                           exc_info=True)
        raise
    send_message(app, STORE.task, {"project": project, "pages": outcomes})
    hand_on(engine, outcomes)
    return {"pages": len(outcomes), "new_urls": added, "links_dropped": dropped,
            "sent_to_render": len(to_render)}


@signals.worker_process_shutdown.connect
@signals.worker_shutdown.connect
def _close_pipelines(**_kwargs: Any) -> None:
    """A stopping worker (or pool child) calls its item pipelines' close_spider: the end of
    the crawl as far as this process is concerned (README: Item pipelines)."""
    closed = close_pipelines()
    if closed:
        logger.info("closed the item pipelines of %d projects", closed)
