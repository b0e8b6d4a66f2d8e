"""The store engine: a batch of page outcomes written in one transaction.

For every page in the batch its items replace whatever an earlier run stored under the
same task id (keyed by task id and item index), and its crawl_tasks row takes its end
state, all in one transaction: a page processed twice leaves its items once, and a row is
never ``done`` without its items. The statistics count a row's outcome in that transaction
too, and only when the row's state changed.
"""

from __future__ import annotations

import logging
import time
from typing import Any, cast

from sqlalchemy.engine import Connection, Engine

from crawlcluster import scheduling, settings
from crawlcluster.database import projects as lifecycle
from crawlcluster.database import render, stats, tallies, worker_leases
from crawlcluster.database.outcomes import record_outcomes, schedule_retries
from crawlcluster.database.results import replace_items
from crawlcluster.messages import LAST_MODIFIED, PLAIN_KEY, Outcome, entry_dispatch
from crawlcluster.rendering import REFRESH_SECONDS
from crawlcluster.schema import DONE, FAILED
from workers.lease import current_lease, hold_batch
from workers.robots import record_robots_outcomes

logger = logging.getLogger(__name__)


def _json_safe(item: Any) -> Any:
    """Items must be JSON; anything else becomes its string form rather than failing the page."""
    if isinstance(item, dict):
        return {str(k): _json_safe(v) for k, v in item.items()}
    if isinstance(item, (list, tuple)):
        return [_json_safe(v) for v in item]
    if item is None or isinstance(item, (str, int, float, bool)):
        return item
    if isinstance(item, bytes):
        return item.decode("utf-8", "replace")
    return str(item)


# what the fetch stage calls a failure to reach or hear from the server
SITE_TROUBLE_KINDS = frozenset({"timeout", "connect", "network"})


def is_site_trouble(page: Outcome) -> bool:
    """Whether a failed page says its site is in trouble (5xx, 429, a timeout, a connection
    that failed or broke): only these count toward a project's auto-pause. A 404, a callback
    that raised, a redirect loop or a body too large say something about one page; a name
    that does not resolve or an unreachable robots.txt about one host, whose rows end by
    themselves; none of them is helped by pausing the whole crawl."""
    kind = page.get("kind")
    if kind in SITE_TROUBLE_KINDS:
        return True
    code = page.get("code")
    return kind == "http" and code is not None and (code >= 500 or code == 429)


def store_pages(engine: Engine, project: str, pages: list[Outcome]) -> dict[str, int]:
    """Write ``pages`` (each an :class:`~crawlcluster.messages.Outcome`) and return counts of
    rows done and failed and items stored.

    Only the rows still queued under the dispatch their outcome carries are written, and only
    they are counted in the statistics, in the transaction that changes their state: an
    outcome that arrives twice (a redelivered message, a worker resumed after its rows were
    sent again) changes nothing and counts nothing."""
    # held (and committed) first: a store worker killed mid-batch leaves its rows to the sweep
    pages = hold_batch(engine, project, "store", pages)
    if not pages:
        return {"done": 0, "failed": 0, "retried": 0, "items": 0}
    now = time.time()
    with engine.begin() as conn:
        # again inside the transaction that writes them: the rows stay locked until it commits,
        # so of two batches with one row's outcome (a duplicate) only the first applies
        still_queued = worker_leases.hold(conn, current_lease(engine).name,
                                          {p["id"]: entry_dispatch(p) for p in pages}, now)
        pages = [p for p in pages if p["id"] in still_queued]
        item_rows = _item_rows(project, pages, now)
        # a 304 keeps the items stored the last time
        done_ids = [p["id"] for p in pages if p["status"] == DONE and not p.get("not_modified")]
        # robots.txt rows are the scheduler's own: recorded in the hosts table, kept out of the streak
        robots, spider_pages = record_robots_outcomes(conn, project, pages, now)
        pages = spider_pages + robots
        # the database layer takes plain dicts (it knows no message types); it notes on a
        # failure why it was not retried, which the row's error then says
        retried = schedule_retries(conn, cast("list[dict[str, Any]]", pages), scheduling.RetryRules.of_row,
                                   now=now)
        outcomes = [
            {"task_id": p["id"], "status": p["status"], "status_code": p.get("code"), "error": p.get("error"),
             "error_kind": p.get("kind"), "final_url": p.get("final_url"), "etag": p.get("etag"),
             "last_modified": p.get(LAST_MODIFIED)}
            for p in pages if p["id"] not in retried
        ]
        replace_items(conn, done_ids, item_rows)
        record_outcomes(conn, outcomes, now=now)
        _note_plain_pages(conn, project, [p for p in pages if p["id"] not in retried], now)
        stats.record_batch(conn, project, pages, retried, now=now)
        tallies.record_tallies(conn, project, pages)  # status codes, items, drops, links filtered
        # a streak counts rows that ended failed (no retry is still open) because their site
        # is in trouble
        failures = [p for p in spider_pages
                    if p["status"] == FAILED and p["id"] not in retried and is_site_trouble(p)]
        successes = sum(1 for p in spider_pages if p["status"] == DONE)
        own = settings.current()
        lifecycle.record_streak(conn, project, successes, len(failures),
                                pause_after=own.auto_pause_failures,
                                pause_seconds=own.auto_pause_seconds,
                                last_error=failures[-1].get("error") if failures else None, now=now)
    return {
        "done": len(done_ids),
        "failed": sum(1 for p in pages if p["status"] == FAILED and p["id"] not in retried),
        "retried": len(retried),
        "items": len(item_rows),
    }


def _note_plain_pages(conn: Connection, project: str, pages: list[Outcome], now: float) -> None:
    """render="auto" pages parsed from a plain fetch are noted with their key, so that they are
    rendered again if the key is found to need a browser; a key found so already (while the
    page was between parse and store) has them sent again at once, in this transaction."""
    plain = [(p["id"], cast("tuple[str, str, str]", tuple(p[PLAIN_KEY]))) for p in pages
             if p["status"] == DONE and p.get(PLAIN_KEY)]
    if not plain:
        return
    render.record_plain_pages(conn, project, plain, now)
    limit = settings.current().render_auto_rerender_max
    for key in render.keys_needing_render(conn, project, {key for _tid, key in plain}):
        reopened, _skipped = render.rerender_plain_pages(conn, project, key, limit,
                                                         due_at=now + 2 * REFRESH_SECONDS, now=now)
        if reopened:
            logger.info("project %s: %d pages of %s%s parsed plainly as it was found to need a browser are "
                        "rendered and parsed again", project, reopened, key[0], key[2])


def _item_rows(project: str, pages: list[Outcome], now: float) -> list[dict[str, Any]]:
    """The results rows of the done pages' items."""
    item_rows = []
    for page in pages:
        if page["status"] != DONE:
            continue
        for index, item in enumerate(page.get("items") or ()):
            item_rows.append({
                "task_id": page["id"], "item_index": index, "project": project, "url": page["url"],
                "item": _json_safe(item), "created_at": now, "updated_at": now,
            })
    return item_rows
