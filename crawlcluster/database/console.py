"""The crawl console's reads of crawl_tasks and results: a project's hosts, a search over its
URLs, one row whole, and a page of results (``crawlcluster web``; the pages are
:mod:`crawlcluster.web`'s).

Each read is bounded by a limit, by the project's hosts or by the rows in flight, never by
the size of the frontier: counts come from the row counters
(:mod:`crawlcluster.database.counters`), URL searches read one range of ix_crawl_tasks_url,
results pages are read by key (never OFFSET over the results).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, func, or_, select, tuple_
from sqlalchemy import text as sql_text
from sqlalchemy.engine import Connection

from crawlcluster.database import counters
from crawlcluster.schema import QUEUED, crawl_stats, crawl_tasks, hosts, results


def host_states(conn: Connection, project: str) -> dict[str, dict[str, int]]:
    """``project``'s pages per host and state (robots.txt rows left out), from the host
    counters (O(hosts), whatever the rows), and per host the queued pages not fetched yet
    (``in_flight``, what per-host limits count: read through ix_crawl_tasks_stale, so bounded
    by the rows in flight, never by the frontier)."""
    table = counters.host_counts(conn, project)
    not_fetched = or_(crawl_tasks.c.fetched_at.is_(None), crawl_tasks.c.fetched_at < crawl_tasks.c.queued_at)
    in_flight = (select(crawl_tasks.c.host, func.count())
                 .where(crawl_tasks.c.status == QUEUED, crawl_tasks.c.project == project, not_fetched)
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


# the length of a URL's beginning that ix_crawl_tasks_url holds (migration 0017)
URL_KEY_CHARS = 1000


def _url_key(conn: Connection) -> Any:
    """The indexed expression of ix_crawl_tasks_url, as the index spells it (byte order)."""
    key = func.substr(crawl_tasks.c.url, 1, URL_KEY_CHARS)
    return key.collate("C") if conn.dialect.name == "postgresql" else key


# ix_crawl_tasks_url leaves queued rows out (migration 0023: a claim adds no entry to it). The
# condition is written as the index spells it, which is how SQLite matches a query to it.
NOT_QUEUED = sql_text("status <> 'queued'")


def _queued_rows(project: str) -> Any:
    """``project``'s queued rows (read through ix_crawl_tasks_stale: as many as the queue
    limits let be in flight, never the frontier)."""
    return select(*_SEARCH_COLUMNS).where(crawl_tasks.c.status == QUEUED, crawl_tasks.c.project == project)


def urls_starting_with(conn: Connection, project: str, prefix: str, limit: int) -> list[dict[str, Any]]:
    """At most ``limit`` of ``project``'s rows whose URL starts with ``prefix``, by URL: one
    range of ix_crawl_tasks_url, however many rows the project has, and its queued rows."""
    key = _url_key(conn)
    head = prefix[:URL_KEY_CHARS]
    in_range = (key >= head, key < head + "\U0010ffff")
    stmt = (select(*_SEARCH_COLUMNS).where(crawl_tasks.c.project == project, NOT_QUEUED, *in_range)
            .order_by(key).limit(limit))
    queued = _queued_rows(project).where(*in_range)
    if len(prefix) > URL_KEY_CHARS:
        longer = crawl_tasks.c.url.like(f"{_like_escaped(prefix)}%", escape="\\")
        stmt, queued = stmt.where(longer), queued.where(longer)
    rows = [dict(row._mapping) for row in conn.execute(stmt)]
    rows += [dict(row._mapping) for row in conn.execute(queued.order_by(key).limit(limit))]
    return sorted(rows, key=lambda row: row["url"])[:limit]


def urls_containing(conn: Connection, project: str, text: str, limit: int,
                    scan_rows: int) -> tuple[list[dict[str, Any]], bool]:
    """At most ``limit`` of ``project``'s rows whose URL contains ``text``, among its queued
    rows and the first ``scan_rows`` of its other URLs in order (read along
    ix_crawl_tasks_url); and whether the project has more rows than that (the search did
    not see them all, by the counters)."""
    key = _url_key(conn)
    window = (select(crawl_tasks.c.task_id, key.label("head"))
              .where(crawl_tasks.c.project == project, NOT_QUEUED)
              .order_by(key).limit(scan_rows).subquery())
    hits = (select(window.c.task_id).where(window.c.head.like(f"%{_like_escaped(text)}%", escape="\\"))
            .limit(limit))
    stmt = (select(*_SEARCH_COLUMNS).where(crawl_tasks.c.task_id.in_(hits)).order_by(crawl_tasks.c.url))
    rows = [dict(row._mapping) for row in conn.execute(stmt)]
    queued = _queued_rows(project).where(crawl_tasks.c.url.like(f"%{_like_escaped(text)}%", escape="\\"))
    rows += [dict(row._mapping) for row in conn.execute(queued.limit(limit))]
    rows = sorted(rows, key=lambda row: row["url"])[:limit]
    return rows, sum(counters.project_counts(conn, project)["rows"].values()) > scan_rows


_SEARCH_COLUMNS = (crawl_tasks.c.task_id, crawl_tasks.c.url, crawl_tasks.c.status, crawl_tasks.c.status_code,
                   crawl_tasks.c.error_kind, crawl_tasks.c.depth)


def search_urls(conn: Connection, project: str, text: str, limit: int,
                scan_rows: int = 20_000) -> tuple[list[dict[str, Any]], bool]:
    """At most ``limit`` of ``project``'s rows found by ``text``, by URL, and whether every
    URL was searched. A ``text`` with a scheme is a URL's beginning, found among all URLs
    through the index. Without one, URLs that start with ``https://`` or ``http://`` and
    ``text`` are found so, and when those are fewer than ``limit``, URLs that contain
    ``text`` are looked for among the first ``scan_rows`` (:func:`urls_containing`)."""
    found: dict[str, dict[str, Any]] = {}
    if "://" in text:  # a URL's beginning: every URL is searched through the index
        return urls_starting_with(conn, project, text, limit), True
    for prefix in ("https://" + text, "http://" + text):
        for row in urls_starting_with(conn, project, prefix, limit - len(found)):
            found[row["task_id"]] = row
        if len(found) >= limit:
            return sorted(found.values(), key=lambda row: row["url"]), True
    inside, partial = urls_containing(conn, project, text, limit, scan_rows)
    for row in inside:
        if len(found) < limit:
            found.setdefault(row["task_id"], row)
    return sorted(found.values(), key=lambda row: row["url"]), not partial


def task_row(conn: Connection, task_id: str) -> dict[str, Any] | None:
    """One crawl_tasks row whole, None when there is none."""
    row = conn.execute(select(crawl_tasks).where(crawl_tasks.c.task_id == task_id)).first()
    return dict(row._mapping) if row else None


def queued_of_project(conn: Connection, project: str) -> int:
    """``project``'s rows queued now (what its in-queue limit counts), from the counters."""
    return counters.project_counts(conn, project)["rows"][QUEUED]


def in_flight_of_host(conn: Connection, host: str) -> int:
    """Requests in flight to ``host``, every project together (what its slot counts)."""
    not_fetched = or_(crawl_tasks.c.fetched_at.is_(None), crawl_tasks.c.fetched_at < crawl_tasks.c.queued_at)
    stmt = select(func.count()).where(crawl_tasks.c.status == QUEUED, crawl_tasks.c.host == host, not_fetched)
    return int(conn.execute(stmt).scalar_one())


def last_fetch_of_host(conn: Connection, project: str, host: str, now: float) -> float | None:
    """When ``project`` last fetched a page of ``host``, at the latest: the end of the last
    minute of the crawl's statistics with a fetch of it (crawl_stats' key, project and host
    first; the rows have no index by host), or ``now`` if that minute has not ended."""
    stmt = select(func.max(crawl_stats.c.minute)).where(crawl_stats.c.project == project,
                                                        crawl_stats.c.host == host, crawl_stats.c.fetched > 0)
    minute = conn.execute(stmt).scalar()
    return None if minute is None else min(now, float(minute) + 60.0)


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
