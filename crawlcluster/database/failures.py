"""Failed pages: listed, counted by kind, and the kind a user writes (``timeout``, ``404``,
``5xx``) turned into a condition (``Crawl.failures``, ``failure_counts``, ``retry_failed``).
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from crawlcluster.database.counts import is_page
from crawlcluster.schema import (
    FAILED,
    crawl_tasks,
)

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
    """Failed rows of ``project`` that are pages (:func:`is_page`)."""
    return [crawl_tasks.c.project == project, crawl_tasks.c.status == FAILED, is_page()]


def failed_rows(conn: Connection, project: str, kind: str | None = None,
                limit: int | None = None) -> list[dict[str, Any]]:
    """``project``'s failed pages (oldest failure first), optionally of one kind."""
    stmt = (select(crawl_tasks.c.task_id, crawl_tasks.c.url, crawl_tasks.c.status_code, crawl_tasks.c.error,
                   crawl_tasks.c.error_kind, crawl_tasks.c.callback, crawl_tasks.c.depth,
                   crawl_tasks.c.fetched_at, crawl_tasks.c.updated_at)
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
