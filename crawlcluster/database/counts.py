"""Counts of a project's rows per state, its pages apart from its robots.txt rows
(``Crawl.stats()``, ``is_idle``, the scheduler's "finished?"): read from the exact counters
of :mod:`crawlcluster.database.counters`, and the conditions other reads use to find a
project's rows through bounded index ranges.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import exists, literal_column, or_, select
from sqlalchemy.engine import Connection

from crawlcluster.database import counters
from crawlcluster.schema import (
    PENDING,
    QUEUED,
    ROBOTS_CALLBACK,
    crawl_tasks,
)

logger = logging.getLogger(__name__)


# Written out, not bound: the partial index ix_crawl_tasks_project_state (every state but
# queued) serves a query only when the query states its condition, and SQLite matches
# that condition as text, never through a parameter.
NOT_QUEUED = crawl_tasks.c.status != literal_column(f"'{QUEUED}'")


def project_rows(project: str) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """Conditions for the two halves of a project's rows, each found through its own index:
    every state but queued (ix_crawl_tasks_project_state), then queued (ix_crawl_tasks_stale)."""
    of_project = crawl_tasks.c.project == project
    return (of_project, NOT_QUEUED), (of_project, crawl_tasks.c.status == QUEUED)


def count_by_status(conn: Connection, project: str) -> dict[str, int]:
    """Rows of ``project`` per state; every state is present, zero when empty. Read from the
    counters (:mod:`crawlcluster.database.counters`): exact, and O(states), however many
    rows the project has."""
    return counters.project_counts(conn, project)["rows"]


# Written out like NOT_QUEUED, so that SQLite matches the partial index's condition:
# ix_crawl_tasks_robots (migration 0011) holds only the robots.txt rows, one per host.
IS_ROBOTS = crawl_tasks.c.callback == literal_column(f"'{ROBOTS_CALLBACK}'")


def is_page() -> Any:
    """The condition that keeps a project's pages and leaves out its robots.txt rows.

    A robots.txt row is the scheduler's own request, one per host: it is not a page of the
    crawl. When it fails, the host's pages fail with kind ``robots`` naming its cause, so
    it is neither listed, counted nor re-opened as a page."""
    return crawl_tasks.c.callback != ROBOTS_CALLBACK


def robots_counts(conn: Connection, project: str) -> dict[str, int]:
    """``project``'s robots.txt rows per state (every state present), from the counters."""
    return counters.project_counts(conn, project)["robots"]


def page_counts(conn: Connection, project: str, rows: dict[str, int] | None = None) -> dict[str, Any]:
    """``{"rows": ..., "pages": ..., "robots": ..., "items": n}``, each a count per state:
    every row (what the scheduler and ``is_idle`` go by), the pages (what a user calls the
    crawl's pages: status, the progress bar, the summary) and the robots.txt rows; and the
    items stored. One read of the counters. ``rows`` is accepted for callers that passed
    :func:`count_by_status` before; the counters' own figures are returned."""
    del rows
    return counters.project_counts(conn, project)


def has_open_tasks(conn: Connection, project: str) -> bool:
    """Whether any row of ``project`` is still pending or queued. One statement, so both
    states are read in one snapshot: two statements under READ COMMITTED could miss a row that
    moves between them, an auto-recrawl row's outcome committed between the two (queued, then
    pending again until its age has passed) or a claim's (pending, then queued), and the
    scheduler would mark a project finished that still has work. Each EXISTS reads its own
    index (ix_crawl_tasks_project_state, ix_crawl_tasks_stale) and stops at the first row."""
    def any_row(status: str) -> Any:
        return exists().where(crawl_tasks.c.project == project, crawl_tasks.c.status == status)

    return bool(conn.execute(select(or_(any_row(PENDING), any_row(QUEUED)))).scalar())


def rows_by_project_and_state(conn: Connection) -> list[tuple[str, str, int]]:
    """(project, state, rows) of every project, for the Prometheus exporter, from the counters."""
    return [(project, state, count) for project, entry in sorted(counters.counts(conn).items())
            for state, count in entry["rows"].items() if count]
