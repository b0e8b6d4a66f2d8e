"""Failed pages: listed, counted by kind, and the kind a user writes (``timeout``, ``404``,
``5xx``) turned into a condition (``Crawl.failures``, ``failure_counts``, ``retry_failed``).
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import func, literal_column, select
from sqlalchemy.engine import Connection

from crawlcluster.schema import FAILED, ROBOTS_CALLBACK, crawl_tasks

logger = logging.getLogger(__name__)


def failure_label(kind: str | None, status_code: int | None) -> str:
    """What a failed row is grouped under: ``HTTP 500`` for an HTTP status, else its kind
    (``timeout``, ``dns``, ``connect``, ``robots``, ``redirect``, ``callback``, ...)."""
    if kind == "http" and status_code is not None:
        return f"HTTP {status_code}"
    return kind or "other"


def failure_filter(kind: str | None) -> list[Any]:
    """``kind`` as a user writes it: an error kind (``timeout``), an HTTP status (``500``,
    ``HTTP 500``) or a class of them (``5xx``)."""
    if not kind:
        return []
    text_kind = kind.strip().lower().removeprefix("http ").strip()
    if text_kind.isdigit():
        return [crawl_tasks.c.status_code == int(text_kind)]
    if len(text_kind) == 3 and text_kind[0].isdigit() and text_kind[1:] == "xx":
        low = int(text_kind[0]) * 100
        return [crawl_tasks.c.status_code >= low, crawl_tasks.c.status_code < low + 100]
    return [crawl_tasks.c.error_kind == text_kind]


def _failed_pages(project: str) -> list[Any]:
    """Failed rows of ``project`` that are pages (:func:`is_page`), with the condition of
    ix_crawl_tasks_failed written out (SQLite matches a partial index's condition as text)."""
    return [crawl_tasks.c.project == project, crawl_tasks.c.status == literal_column(f"'{FAILED}'"),
            crawl_tasks.c.callback != literal_column(f"'{ROBOTS_CALLBACK}'")]


_ROW_COLUMNS = (crawl_tasks.c.task_id, crawl_tasks.c.url, crawl_tasks.c.status_code, crawl_tasks.c.error,
                crawl_tasks.c.error_kind, crawl_tasks.c.callback, crawl_tasks.c.depth,
                crawl_tasks.c.fetched_at, crawl_tasks.c.updated_at)


def failed_rows(conn: Connection, project: str, kind: str | None = None,
                limit: int | None = None) -> list[dict[str, Any]]:
    """``project``'s failed pages (oldest failure first), optionally of one kind."""
    stmt = (select(*_ROW_COLUMNS)
            .where(*_failed_pages(project), *failure_filter(kind))
            .order_by(crawl_tasks.c.updated_at, crawl_tasks.c.task_id))
    if limit is not None:
        stmt = stmt.limit(limit)
    rows = []
    for row in conn.execute(stmt):
        values = dict(row._mapping)
        values["kind"] = failure_label(values["error_kind"], values["status_code"])
        rows.append(values)
    return rows


def failure_counts(conn: Connection, project: str) -> dict[str, int]:
    """``project``'s failed pages per :func:`failure_label`, most first."""
    stmt = (select(crawl_tasks.c.error_kind, crawl_tasks.c.status_code, func.count())
            .where(*_failed_pages(project))
            .group_by(crawl_tasks.c.error_kind, crawl_tasks.c.status_code))
    counts: dict[str, int] = {}
    for kind, status_code, count in conn.execute(stmt):
        label = failure_label(kind, status_code)
        counts[label] = counts.get(label, 0) + count
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def failure_groups(conn: Connection, project: str, sample: int) -> list[dict[str, Any]]:
    """``project``'s failed pages per :func:`failure_label`, most first: ``{"kind", "count",
    "samples"}`` with the ``sample`` oldest failures of each. Read from ix_crawl_tasks_failed
    (failed pages by kind, status code and time): one index range per (kind, status code),
    whatever the number of pages that did not fail."""
    stmt = (select(crawl_tasks.c.error_kind, crawl_tasks.c.status_code, func.count())
            .where(*_failed_pages(project))
            .group_by(crawl_tasks.c.error_kind, crawl_tasks.c.status_code))
    groups: dict[str, dict[str, Any]] = {}
    for kind, status_code, count in conn.execute(stmt).all():
        label = failure_label(kind, status_code)
        group = groups.setdefault(label, {"kind": label, "count": 0, "samples": []})
        group["count"] += count
        same = [crawl_tasks.c.error_kind.is_(None) if kind is None else crawl_tasks.c.error_kind == kind,
                crawl_tasks.c.status_code.is_(None) if status_code is None
                else crawl_tasks.c.status_code == status_code]
        rows = conn.execute(select(*_ROW_COLUMNS).where(*_failed_pages(project), *same)
                            # the group's columns first: its rows are then read in the index's
                            # order even when one is NULL (a planner reads a whole group otherwise)
                            .order_by(crawl_tasks.c.error_kind, crawl_tasks.c.status_code,
                                      crawl_tasks.c.updated_at, crawl_tasks.c.task_id).limit(sample))
        group["samples"].extend({**row._mapping, "kind": label} for row in rows)
    for group in groups.values():
        group["samples"] = sorted(group["samples"], key=lambda r: (r["updated_at"], r["task_id"]))[:sample]
    return sorted(groups.values(), key=lambda g: (-g["count"], g["kind"]))
