"""The store engine: a batch of page outcomes written in one transaction.

For every page in the batch its items replace whatever an earlier run stored under the
same task id (keyed by task id and item index), and its crawl_tasks row takes its end
state, all in one transaction: a page processed twice leaves its items once, and a row is
never ``done`` without its items.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlalchemy.engine import Engine

from crawlcluster import scheduling, settings
from crawlcluster.database import projects as lifecycle
from crawlcluster.database import stats
from crawlcluster.database.outcomes import record_outcomes, schedule_retries
from crawlcluster.database.results import replace_items
from crawlcluster.dispatch.robots import record_robots
from crawlcluster.schema import DONE, FAILED, ROBOTS_CALLBACK, ROBOTS_ERROR, ROBOTS_UNREACHABLE
from crawlcluster.urls import url_host

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


def is_site_trouble(page: dict[str, Any]) -> bool:
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


def _record_robots(conn: Any, project: str, pages: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
    """Write each fetched robots.txt to the hosts table; return the rows' outcomes (a 4xx
    robots.txt is a success: the host allows everything). A failed one is tried again
    after the project's retry delays (its retry policy's, or its own retry_delays)."""
    project_settings = (lifecycle.project_row(conn, project) or {}).get("settings") or {}
    delays = scheduling.resolve(None, None, None, project_settings).retry_delays
    outcomes = []
    for page in pages:
        code = page.get("robots_code", page.get("code"))
        state = record_robots(
            conn, url_host(page["url"]), body=page.get("robots"), status_code=code, error=page.get("error"),
            kind=page.get("kind"), user_agent=settings.get("user_agent"), ttl_seconds=settings.get("robots_ttl_seconds"),
            error_attempts=settings.get("robots_error_attempts"), error_delays=delays,
            unreachable_seconds=settings.get("robots_unreachable_seconds"), now=now)
        if state in (ROBOTS_ERROR, ROBOTS_UNREACHABLE):
            outcomes.append({**page, "status": FAILED, "retry": False})
        else:
            outcomes.append({"id": page["id"], "url": page["url"], "status": DONE, "code": code,
                             "final_url": page.get("final_url")})
    return outcomes


def store_pages(engine: Engine, project: str, pages: list[dict[str, Any]]) -> dict[str, int]:
    """Write ``pages`` (each ``{"id", "url", "status", "code"?, "error"?, "final_url"?, "items"?}``)
    and return counts of rows done and failed and items stored."""
    now = time.time()
    item_rows = []
    for page in pages:
        if page["status"] != DONE:
            continue
        for index, item in enumerate(page.get("items") or ()):
            item_rows.append({
                "task_id": page["id"], "item_index": index, "project": project, "url": page["url"],
                "item": _json_safe(item), "created_at": now, "updated_at": now,
            })
    # a 304 keeps the items stored the last time
    done_ids = [p["id"] for p in pages if p["status"] == DONE and not p.get("not_modified")]
    with engine.begin() as conn:
        robots_pages = [p for p in pages if p.get("cb") == ROBOTS_CALLBACK]
        if robots_pages:
            pages = [p for p in pages if p.get("cb") != ROBOTS_CALLBACK] + _record_robots(conn, project, robots_pages, now)
        retried = schedule_retries(conn, pages, scheduling.RetryRules.of_row, now=now)
        outcomes = [
            {"task_id": p["id"], "status": p["status"], "status_code": p.get("code"), "error": p.get("error"),
             "error_kind": p.get("kind"), "final_url": p.get("final_url"), "etag": p.get("etag"), "last_modified": p.get("lm")}
            for p in pages if p["id"] not in retried
        ]
        replace_items(conn, done_ids, item_rows)
        record_outcomes(conn, outcomes, now=now)
        stats.record_batch(conn, project, pages, retried, now=now)
        # a streak counts rows that ended failed (a retry is still open) because their site
        # is in trouble; robots.txt rows are the scheduler's own
        failures = [p for p in pages if p["status"] == FAILED and p.get("cb") != ROBOTS_CALLBACK
                    and p["id"] not in retried and is_site_trouble(p)]
        successes = sum(1 for p in pages if p["status"] == DONE and p.get("cb") != ROBOTS_CALLBACK)
        lifecycle.record_streak(conn, project, successes, len(failures),
                                pause_after=settings.get("auto_pause_failures"),
                                pause_seconds=settings.get("auto_pause_seconds"),
                                last_error=failures[-1].get("error") if failures else None, now=now)
    return {
        "done": len(done_ids),
        "failed": sum(1 for p in pages if p["status"] == FAILED and p["id"] not in retried),
        "retried": len(retried),
        "items": len(item_rows),
    }
