"""The crawl_tallies table: per project, the end-of-crawl counts Scrapy users read (responses
by status code, items scraped, items dropped by reason, links filtered), added by the store
stage in the transaction that changes the rows, and read whole by ``Crawl.stats()``.

What the figures mean is :mod:`crawlcluster.stats`'s.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable, Mapping

from sqlalchemy import select
from sqlalchemy.engine import Connection

from crawlcluster.db import execute_rows, statement, upsert_rows_statement
from crawlcluster.schema import DONE, crawl_tallies

STATUS, ITEMS, DROPPED, LINKS = "status", "items", "dropped", "links"
MAX_NAME_LENGTH: int = getattr(crawl_tallies.c.name.type, "length", None) or 200


def batch_tallies(pages: Iterable[Mapping[str, Any]]) -> Counter[tuple[str, str]]:
    """One store batch's counts by (tally, name): every response's status code (a retried
    one too, as Scrapy counts each response), and of the done pages their items, their
    dropped items by reason and their filtered links."""
    counts: Counter[tuple[str, str]] = Counter()
    for page in pages:
        if page.get("code") is not None:
            counts[(STATUS, str(page["code"]))] += 1
        if page["status"] != DONE:
            continue
        if page.get("items") and not page.get("not_modified"):
            counts[(ITEMS, "scraped")] += len(page["items"])
        for reason, count in (page.get("dropped_items") or {}).items():
            counts[(DROPPED, str(reason)[:MAX_NAME_LENGTH])] += count
        for name, count in (page.get("links_filtered") or {}).items():
            counts[(LINKS, str(name)[:MAX_NAME_LENGTH])] += count
    return counts


def record_tallies(conn: Connection, project: str, pages: Iterable[Mapping[str, Any]]) -> None:
    """Add one store batch's counts (:func:`batch_tallies`) to ``project``'s, in one upsert."""
    counts = batch_tallies(pages)
    if not counts:
        return
    rows = [{"project": project, "tally": tally, "name": name, "count": count}
            for (tally, name), count in sorted(counts.items())]
    execute_rows(conn, statement(conn, "crawl_tallies.add", _add_statement), rows)


def _add_statement(dialect: str) -> Any:
    """The upsert that adds counts to a tally's row (built once per process)."""
    return upsert_rows_statement(dialect, crawl_tallies, key=["project", "tally", "name"],
                                 update=lambda excluded: {"count": crawl_tallies.c.count + excluded.count})


def project_tallies(conn: Connection, project: str) -> dict[str, dict[str, int]]:
    """``project``'s counts as ``{tally: {name: count}}``."""
    found: dict[str, dict[str, int]] = {}
    rows = conn.execute(select(crawl_tallies.c.tally, crawl_tallies.c.name, crawl_tallies.c.count)
                        .where(crawl_tallies.c.project == project)).all()
    for tally, name, count in rows:
        found.setdefault(tally, {})[name] = int(count)
    return found
