"""The results browser (``/projects/NAME/results``: a page of items at a time, a column per key
the page's items share, the rest folded) and its downloads (``results.jsonl``, ``.json``,
``.csv``, ``.xml``), streamed by the CLI export's own writer (:meth:`crawlcluster.Crawl.export`, the
feeds of :mod:`crawlcluster.feeds`), so a download equals ``crawlcluster results -o``.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Iterator

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from crawlcluster.client import Crawl
from crawlcluster.database import console as console_rows
from crawlcluster.database import projects as lifecycle
from crawlcluster.db import get_engine
from crawlcluster.feeds import STREAM_FORMATS
from crawlcluster.web.common import console_of, not_found, page

logger = logging.getLogger(__name__)

PAGE_ITEMS = 50
MEDIA_TYPES = {"jsonl": "application/x-ndjson; charset=utf-8", "json": "application/json; charset=utf-8",
               "csv": "text/csv; charset=utf-8", "xml": "application/xml; charset=utf-8"}
# chunks of a download held between the export's thread and the response, at most
DOWNLOAD_CHUNKS_AHEAD = 8
# a download whose reader stopped reading for this long is abandoned (its thread ends)
DOWNLOAD_STALL_SECONDS = 120.0


def _key(text: str | None) -> tuple[str, int] | None:
    """``TASK_ID:INDEX`` from a page link, None when absent or malformed."""
    task_id, sep, index = (text or "").rpartition(":")
    return (task_id, int(index)) if sep and task_id and index.isdigit() else None


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        import json

        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _results_context(database_url: str | None, name: str,
                     after: tuple[str, int] | None) -> dict[str, Any] | None:
    with get_engine(database_url).connect() as conn:
        project = lifecycle.project_row(conn, name)
        if project is None:
            return None
        rows = console_rows.results_page(conn, name, after, PAGE_ITEMS + 1)
        previous = console_rows.results_before(conn, name, after, PAGE_ITEMS - 1) if after else None
    more = len(rows) > PAGE_ITEMS
    rows = rows[:PAGE_ITEMS]
    items = [row["item"] if isinstance(row["item"], dict) else {"value": row["item"]} for row in rows]
    # a column per key every item of this page has, in first-seen order; the rest folded
    common = [key for key in dict.fromkeys(k for item in items for k in item)
              if all(key in item for item in items)]
    entries = [{"task_id": row["task_id"], "url": row["url"], "index": row["item_index"],
                "cells": [_cell(item.get(key)) for key in common],
                "others": {k: _cell(v) for k, v in item.items() if k not in common}}
               for row, item in zip(rows, items)]
    last = rows[-1] if rows else None
    return {"project": project, "columns": common, "entries": entries, "formats": list(STREAM_FORMATS),
            "next": f"{last['task_id']}:{last['item_index']}" if more and last else None,
            "has_previous": after is not None,
            "previous": f"{previous[0]}:{previous[1]}" if previous else None}


async def results_page(request: Request) -> Response:
    name = request.path_params["name"]
    after = _key(request.query_params.get("after"))
    context = await run_in_threadpool(_results_context, console_of(request).database_url, name, after)
    if context is None:
        return not_found(request, f"no project named {name!r}")
    return page(request, "results.html", context)


class _ChunkWriter:
    """The text stream :meth:`Crawl.export` writes into: each flush (a feed flushes after
    every chunk of items) hands what was written to the response, through a bounded queue."""

    def __init__(self, chunks: queue.Queue[str | None], gone: threading.Event) -> None:
        self.chunks = chunks
        self.gone = gone
        self._parts: list[str] = []
        self.name = "<download>"
        self.closed = False

    def write(self, text: str) -> int:
        self._parts.append(text)
        return len(text)

    def flush(self) -> None:
        if self._parts:
            text, self._parts = "".join(self._parts), []
            while not self.gone.is_set():
                try:
                    self.chunks.put(text, timeout=1.0)
                    return
                except queue.Full:
                    continue
            raise BrokenPipeError("the download's reader went away")


def _download(crawl: Crawl, fmt: str) -> Iterator[str]:
    chunks: queue.Queue[str | None] = queue.Queue(maxsize=DOWNLOAD_CHUNKS_AHEAD)
    gone = threading.Event()
    failure: list[BaseException] = []

    def export() -> None:
        try:
            crawl.export(_ChunkWriter(chunks, gone), fmt)  # type: ignore[arg-type]
        except BaseException as exc:  # noqa: BLE001 - ends the response instead of hanging it
            failure.append(exc)
        finally:
            while not gone.is_set():
                try:
                    chunks.put(None, timeout=1.0)
                    break
                except queue.Full:
                    continue

    thread = threading.Thread(target=export, name=f"download-{crawl.project}", daemon=True)
    thread.start()
    try:
        while True:
            chunk = chunks.get(timeout=DOWNLOAD_STALL_SECONDS)
            if chunk is None:
                break
            yield chunk
    finally:
        gone.set()
    if failure and not isinstance(failure[0], BrokenPipeError):
        logger.error("download of %s as %s failed: %s", crawl.project, fmt, failure[0])


async def results_download(request: Request) -> Response:
    name, fmt = request.path_params["name"], request.path_params["fmt"]
    if fmt not in STREAM_FORMATS:
        return not_found(request, f"no format {fmt!r} (one of {', '.join(STREAM_FORMATS)})")
    database_url = console_of(request).database_url

    def exists() -> bool:
        with get_engine(database_url).connect() as conn:
            return lifecycle.project_row(conn, name) is not None

    if not await run_in_threadpool(exists):
        return not_found(request, f"no project named {name!r}")
    crawl = Crawl(name, database_url=database_url)
    filename = "".join(c if c.isalnum() or c in "-_." else "_" for c in name) + f".{fmt}"
    return StreamingResponse(_download(crawl, fmt), media_type=MEDIA_TYPES[fmt],
                             headers={"content-disposition": f'attachment; filename="{filename}"'})


routes = [
    Route("/projects/{name}/results", results_page, methods=["GET"]),
    Route("/projects/{name}/results.{fmt}", results_download, methods=["GET"]),
]
