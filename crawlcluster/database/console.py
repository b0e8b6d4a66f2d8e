"""The crawl console's reads of crawl_tasks and results: a project's hosts, a search over its
URLs, one row whole, and a page of results (``crawlcluster web``; the pages are
:mod:`crawlcluster.web`'s).

Each read is bounded by a limit or by the project's hosts, except the per-host table, which
groups a project's rows by host and state (a later step keeps per-state counters for
10^7-row projects).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, func, or_, select, tuple_
from sqlalchemy.engine import Connection

from crawlcluster.database.counts import is_page
from crawlcluster.schema import QUEUED, crawl_tasks, hosts, results


def host_states(conn: Connection, project: str) -> dict[str, dict[str, int]]:
    """``project``'s pages per host and state (robots.txt rows left out), and per host the
    queued pages not fetched yet (``in_flight``, what per-host limits count)."""
    stmt = (select(crawl_tasks.c.host, crawl_tasks.c.status, func.count())
            .where(crawl_tasks.c.project == project, is_page())
            .group_by(crawl_tasks.c.host, crawl_tasks.c.status))
    table: dict[str, dict[str, int]] = {}
    for host, status, count in conn.execute(stmt):
        table.setdefault(host, {})[status] = count
    not_fetched = or_(crawl_tasks.c.fetched_at.is_(None), crawl_tasks.c.fetched_at < crawl_tasks.c.queued_at)
    in_flight = (select(crawl_tasks.c.host, func.count())
                 .where(crawl_tasks.c.project == project, crawl_tasks.c.status == QUEUED, not_fetched)
                 .group_by(crawl_tasks.c.host))
    for host, count in conn.execute(in_flight):
        table.setdefault(host, {})["in_flight"] = count
    return table


def robots_of_hosts(conn: Connection, names: list[str]) -> dict[str, dict[str, Any]]:
    """The hosts table's rows (robots.txt state, Crawl-delay, block) of ``names``, by host."""
    if not names:
        return {}
    stmt = select(hosts.c.host, hosts.c.robots_status, hosts.c.crawl_delay, hosts.c.blocked_until,
                  hosts.c.robots_error).where(hosts.c.host.in_(names))
    return {row.host: dict(row._mapping) for row in conn.execute(stmt)}


def _like_escaped(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def search_urls(conn: Connection, project: str, text: str, limit: int) -> list[dict[str, Any]]:
    """At most ``limit`` of ``project``'s rows whose URL contains ``text``, by URL."""
    stmt = (select(crawl_tasks.c.task_id, crawl_tasks.c.url, crawl_tasks.c.status, crawl_tasks.c.status_code,
                   crawl_tasks.c.error_kind, crawl_tasks.c.depth)
            .where(crawl_tasks.c.project == project,
                   crawl_tasks.c.url.like(f"%{_like_escaped(text)}%", escape="\\"))
            .order_by(crawl_tasks.c.url).limit(limit))
    return [dict(row._mapping) for row in conn.execute(stmt)]


def task_row(conn: Connection, task_id: str) -> dict[str, Any] | None:
    """One crawl_tasks row whole, None when there is none."""
    row = conn.execute(select(crawl_tasks).where(crawl_tasks.c.task_id == task_id)).first()
    return dict(row._mapping) if row else None


def queued_of_project(conn: Connection, project: str) -> int:
    """``project``'s rows queued now (what its in-queue limit counts)."""
    stmt = select(func.count()).where(crawl_tasks.c.project == project, crawl_tasks.c.status == QUEUED)
    return int(conn.execute(stmt).scalar_one())


def in_flight_of_host(conn: Connection, host: str) -> int:
    """Requests in flight to ``host``, every project together (what its slot counts)."""
    not_fetched = or_(crawl_tasks.c.fetched_at.is_(None), crawl_tasks.c.fetched_at < crawl_tasks.c.queued_at)
    stmt = select(func.count()).where(crawl_tasks.c.status == QUEUED, crawl_tasks.c.host == host, not_fetched)
    return int(conn.execute(stmt).scalar_one())


def last_fetch_of_host(conn: Connection, host: str) -> float | None:
    """When a page of ``host`` was last fetched, by any project (its delay counts from then)."""
    stmt = select(func.max(crawl_tasks.c.fetched_at)).where(crawl_tasks.c.host == host)
    return conn.execute(stmt).scalar()


def results_page(conn: Connection, project: str, after: tuple[str, int] | None,
                 limit: int) -> list[dict[str, Any]]:
    """At most ``limit`` of ``project``'s results after ``after`` (task id, item index), in
    the export's order, each with its ``task_id``, ``item_index``, ``url`` and ``item``."""
    stmt = (select(results.c.task_id, results.c.item_index, results.c.url, results.c.item)
            .where(results.c.project == project)
            .order_by(results.c.task_id, results.c.item_index).limit(limit))
    if after is not None:
        task_id, index = after
        stmt = stmt.where(or_(results.c.task_id > task_id,
                              and_(results.c.task_id == task_id, results.c.item_index > index)))
    return [dict(row._mapping) for row in conn.execute(stmt)]


def results_before(conn: Connection, project: str, before: tuple[str, int],
                   limit: int) -> tuple[str, int] | None:
    """The key after which the page of ``limit`` results that ends just before ``before``
    starts (None: it is the first page), for a "previous" link."""
    stmt = (select(results.c.task_id, results.c.item_index)
            .where(results.c.project == project,
                   tuple_(results.c.task_id, results.c.item_index) < tuple_(*before))
            .order_by(results.c.task_id.desc(), results.c.item_index.desc()).offset(limit).limit(1))
    row = conn.execute(stmt).first()
    return (row.task_id, row.item_index) if row else None


def items_of_task(conn: Connection, task_id: str, limit: int) -> list[Any]:
    """The first ``limit`` items a page produced, in order."""
    stmt = (select(results.c.item).where(results.c.task_id == task_id)
            .order_by(results.c.item_index).limit(limit))
    return list(conn.execute(stmt).scalars())
