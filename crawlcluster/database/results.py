"""The results table: each page's items, replaced whole when a page is stored again, and
read back in a stable order (``Crawl.results``, ``Crawl.stats``).
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

from sqlalchemy import Integer, delete, func, literal_column, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnClause

from crawlcluster.db import execute_rows, statement, upsert_rows_statement
from crawlcluster.schema import results


def replace_items(conn: Connection, task_ids: Sequence[str], item_rows: list[dict[str, Any]]) -> None:
    """The items of the pages ``task_ids`` become ``item_rows`` (keyed by task id and item
    index): a page stored again keeps no item of the earlier run, and never doubles one."""
    if task_ids:
        conn.execute(delete(results).where(results.c.task_id.in_(list(task_ids))))
    if item_rows:
        execute_rows(conn, statement(conn, "results.replace", _replace_statement), item_rows)


def _replace_statement(dialect: str) -> Any:
    """The upsert of one item row (built once per process)."""
    return upsert_rows_statement(dialect, results, key=["task_id", "item_index"],
                                 update=lambda excluded: {"item": excluded.item, "url": excluded.url,
                                                          "updated_at": excluded.updated_at})


def stream_items(conn: Connection, project: str, batch_size: int = 1000) -> Iterator[Any]:
    """Every item of ``project`` by task id and item index, read with a server-side cursor
    ``batch_size`` rows at a time (constant memory)."""
    stmt = select(results.c.item).where(results.c.project == project).order_by(results.c.task_id,
                                                                                results.c.item_index)
    for (item,) in conn.execution_options(stream_results=True, yield_per=batch_size).execute(stmt):
        yield item


def has_items(conn: Connection, project: str) -> bool:
    """Whether ``project`` has stored any item."""
    stmt = select(results.c.task_id).where(results.c.project == project).limit(1)
    return conn.execute(stmt).first() is not None


def distinct_pages(conn: Connection, project: str) -> list[str]:
    """The task ids of the pages of ``project`` that have items."""
    stmt = select(results.c.task_id).distinct().where(results.c.project == project)
    return [task_id for (task_id,) in conn.execute(stmt)]


def items_of_pages(conn: Connection, task_ids: Sequence[str]) -> list[tuple[str, Any]]:
    """``(task id, item)`` of the pages ``task_ids``, each page's items in their order."""
    stmt = (select(results.c.task_id, results.c.item).where(results.c.task_id.in_(list(task_ids)))
            .order_by(results.c.task_id, results.c.item_index))
    return [(task_id, item) for task_id, item in conn.execute(stmt)]


def stream_page_items(conn: Connection, project: str, batch_size: int = 1000) -> Iterator[tuple[str, Any]]:
    """``(task id, item)`` of every item of ``project`` in page order, read with a
    server-side cursor ``batch_size`` rows at a time."""
    stmt = (select(results.c.task_id, results.c.item).where(results.c.project == project)
            .order_by(results.c.task_id, results.c.item_index))
    for task_id, item in conn.execution_options(stream_results=True, yield_per=batch_size).execute(stmt):
        yield task_id, item


# SQLite's implicit row id of the results table (an ordinary rowid table): it only grows
# while a crawl inserts, which is how the embedded crawl's live feed finds new items
ROWID: ColumnClause[int] = literal_column("results.rowid", Integer)


def max_rowid(conn: Connection) -> int:
    """The highest SQLite rowid of the results table (0 when empty)."""
    return conn.execute(select(func.max(ROWID)).select_from(results)).scalar() or 0


def rows_after(conn: Connection, rowid: int) -> list[tuple[int, str, str]]:
    """``(rowid, task id, project)`` of the results rows above ``rowid``, in rowid order
    (SQLite only)."""
    stmt = select(ROWID, results.c.task_id, results.c.project).select_from(results).where(ROWID > rowid)
    return [(r, task_id, project) for r, task_id, project in conn.execute(stmt.order_by(ROWID))]
