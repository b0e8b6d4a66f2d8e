"""The results table: each page's items, replaced whole when a page is stored again, and
read back in a stable order (``Crawl.results``, ``Crawl.stats``).
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

from sqlalchemy import delete, func, select
from sqlalchemy.engine import Connection

from crawlcluster.db import upsert
from crawlcluster.schema import results


def replace_items(conn: Connection, task_ids: Sequence[str], item_rows: list[dict[str, Any]]) -> None:
    """The items of the pages ``task_ids`` become ``item_rows`` (keyed by task id and item
    index): a page stored again keeps no item of the earlier run, and never doubles one."""
    if task_ids:
        conn.execute(delete(results).where(results.c.task_id.in_(list(task_ids))))
    if item_rows:
        conn.execute(upsert(conn, results, item_rows, key=["task_id", "item_index"],
                            update=lambda excluded: {"item": excluded.item, "url": excluded.url,
                                                     "updated_at": excluded.updated_at}))


def item_count(conn: Connection, project: str) -> int:
    """Items stored for ``project``."""
    return conn.execute(select(func.count()).select_from(results).where(results.c.project == project)).scalar_one()


def stream_items(conn: Connection, project: str, batch_size: int = 1000) -> Iterator[Any]:
    """Every item of ``project`` by task id and item index, read with a server-side cursor
    ``batch_size`` rows at a time (constant memory)."""
    stmt = select(results.c.item).where(results.c.project == project).order_by(results.c.task_id,
                                                                                results.c.item_index)
    for (item,) in conn.execution_options(stream_results=True, yield_per=batch_size).execute(stmt):
        yield item
