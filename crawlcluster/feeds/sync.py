"""The live copy of a crawl's items into its feed: :class:`FeedSync` polls the results table
of the embedded crawl's SQLite file (the rows inserted since its last poll, by rowid) and
writes each page's items once, rewriting the file when a CSV header must grow. A feed that
appends (``-o``) gets the items this run stores; one written afresh (``-O``) every item of
the project, those of earlier runs of a resumed crawl included. A Parquet file, which is
not written live, is written whole by :meth:`FeedSync.finish`."""

from __future__ import annotations

from typing import Any, Iterator

from sqlalchemy.engine import Engine

from crawlcluster.database import results
from crawlcluster.feeds.base import Feed
from crawlcluster.feeds.csv_feed import CsvFeed
from crawlcluster.feeds.parquet_feed import ParquetFeed

# a store transaction deletes a page's earlier items before it inserts; when they were the
# newest rows SQLite hands their rowids out again, so a poll looks this many rowids back
# (rows re-read are dropped by the pages already written)
ROWID_LOOKBACK = 5000
# Items of this many pages are read per query when new pages are found.
READ_CHUNK_PAGES = 500


class FeedSync:
    """Copies a project's stored items into a :class:`Feed`, each page's items once.

    ``poll()`` reads the pages whose items changed since shortly before the previous poll
    and writes those it has not written; ``finish()`` makes a last full pass (nothing
    stored is left out) and closes the feed. A page stored twice (a message delivered
    again) keeps the items written the first time.
    """

    def __init__(self, feed: Feed, engine: Engine, project: str) -> None:
        self.feed = feed
        self.engine = engine
        self.project = project
        self.written: set[str] = set()  # task ids whose items are in the file
        # pages stored before this run, left out of a file -o appends to
        self.earlier: set[str] = set()
        self._last_rowid = 0
        self.closed = False

    @property
    def count(self) -> int:
        return self.feed.count

    def start(self) -> None:
        """Written afresh (``-O``), the file gets every item the project already has (a
        resumed crawl): it then holds the crawl's items once each, however many runs it
        took. Appended to (``-o``), it gets only what this run stores: the earlier runs'
        items are in the file they were written to."""
        self._last_rowid = self._max_rowid()
        if not self.feed.live:
            return
        if self.feed.append:
            with self.engine.connect() as conn:
                self.earlier = set(results.distinct_pages(conn, self.project))
        elif self._has_items():
            self._rewrite()

    def _has_items(self) -> bool:
        with self.engine.connect() as conn:
            return results.has_items(conn, self.project)

    def _max_rowid(self) -> int:
        with self.engine.connect() as conn:
            return results.max_rowid(conn)

    def poll(self) -> int:
        """Write the pages stored since the last poll; return how many items were written.

        New items are found by SQLite's rowid, which grows with every insert: a poll reads
        only the rows inserted since the previous one (through the primary key), however
        many items the file holds, and a transaction that committed late is still seen,
        because its rows' rowids are above the last one seen whenever it commits."""
        if not self.feed.live:
            return 0
        with self.engine.connect() as conn:
            rows = results.rows_after(conn, self._last_rowid - ROWID_LOOKBACK)
        if rows:
            self._last_rowid = max(self._last_rowid, rows[-1][0])
        fresh = list(dict.fromkeys(task_id for _rowid, task_id, project in rows
                                   if project == self.project and task_id not in self.written
                                   and task_id not in self.earlier))
        return self._write_pages(fresh)

    def finish(self) -> int:
        """A full pass over the project's items, then close the feed; return the total written."""
        if self.closed:
            return self.feed.count
        if isinstance(self.feed, ParquetFeed):  # not live: written whole, now
            self.closed = True
            return self.feed.write_all(self._all_items)
        with self.engine.connect() as conn:
            missing = [task_id for task_id in results.distinct_pages(conn, self.project)
                       if task_id not in self.written and task_id not in self.earlier]
        self._write_pages(missing)
        self.close()
        return self.feed.count

    def _all_items(self) -> Iterator[dict[str, Any]]:
        with self.engine.connect() as conn:
            for _task_id, item in results.stream_page_items(conn, self.project):
                yield item

    def close(self) -> None:
        """Close the feed as it is (a ``.json`` array gets its ``]``); safe to call twice."""
        if not self.closed:
            self.closed = True
            self.feed.close()

    def _pages(self, task_ids: list[str]) -> Iterator[tuple[str, list[dict[str, Any]]]]:
        for start in range(0, len(task_ids), READ_CHUNK_PAGES):
            chunk = sorted(task_ids[start:start + READ_CHUNK_PAGES])
            with self.engine.connect() as conn:
                rows = results.items_of_pages(conn, chunk)
            page: list[dict[str, Any]] = []
            current = None
            for task_id, item in rows:
                if task_id != current and page:
                    yield current, page  # type: ignore[misc]
                    page = []
                current = task_id
                page.append(item)
            if page:
                yield current, page  # type: ignore[misc]

    def _write_pages(self, task_ids: list[str]) -> int:
        written = 0
        batch: list[dict[str, Any]] = []
        batch_ids: list[str] = []
        for task_id, items in self._pages(task_ids):
            if task_id in self.written:  # written by a rewrite a moment ago
                continue
            if self.feed.wants_rewrite(batch + items):
                self._flush(batch, batch_ids)
                batch, batch_ids = [], []
                self._rewrite()  # writes every stored item, with the wider header
                continue
            batch.extend(items)
            batch_ids.append(task_id)
            written += len(items)
        self._flush(batch, batch_ids)
        return written

    def _flush(self, items: list[dict[str, Any]], task_ids: list[str]) -> None:
        if task_ids:
            self.feed.write(items)
            self.written.update(task_ids)

    def _rewrite(self) -> None:
        """Write the file afresh from every item the project has stored now (but those of
        earlier runs, when appending: the rows the file held before are kept instead)."""
        columns: dict[str, None] = {}
        with self.engine.connect() as conn:
            for task_id, item in results.stream_page_items(conn, self.project):
                if task_id not in self.earlier:
                    columns.update(dict.fromkeys(item))
        self.feed.restart(columns)
        self.written.clear()
        known = set(columns)
        with self.engine.connect() as conn:
            pages: dict[str, list[dict[str, Any]]] = {}
            for task_id, item in results.stream_page_items(conn, self.project):
                if task_id in self.earlier:
                    continue
                pages.setdefault(task_id, []).append(item)
                if len(pages) > READ_CHUNK_PAGES:
                    self._write_known(pages, known)
                    pages = {}
            self._write_known(pages, known)
        if isinstance(self.feed, CsvFeed):
            self.feed.commit_restart()

    def _write_known(self, pages: dict[str, list[dict[str, Any]]], known: set[str]) -> None:
        # a page stored between the two passes may carry a key the header lacks: it is
        # left for the next poll, which rewrites again
        keep = {task_id: items for task_id, items in pages.items()
                if not isinstance(self.feed, CsvFeed) or all(key in known for item in items for key in item)}
        self._flush([item for items in keep.values() for item in items], list(keep))
