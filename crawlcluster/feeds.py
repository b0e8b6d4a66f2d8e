"""Item feeds: the one place output formats live. ``crawlcluster crawl -o FILE`` (written
while the crawl runs), ``crawlcluster results -o FILE`` and ``Crawl.export`` all write
through the feed classes here.

A feed is opened (so checked) before the first fetch, then :class:`FeedSync` copies the
items the store stage has committed into it every half second (the rows inserted since
its last poll, by SQLite rowid), a page's items at once,
each page once, and flushes. A crash or a ``kill -9`` therefore leaves every item that
was in the file's last flush; the database still holds them all (``crawlcluster
results``). Formats come from the file's extension:

    .jsonl .jl .ndjson   one JSON object per line
    .json                a JSON array: ``[`` at once, ``]`` when the crawl ends or stops
    .csv                 a header from the items' keys; when an item brings a new key the
                         file is rewritten from the database with the wider header (to a
                         temporary file beside it, then renamed over it)
"""

from __future__ import annotations

import csv
import json
import logging
import os
import stat
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator

from sqlalchemy import func, literal_column, select
from sqlalchemy.engine import Engine

from crawlcluster.errors import ConfigurationError
from crawlcluster.schema import results

logger = logging.getLogger(__name__)

__all__ = ["FEED_FORMATS", "FeedError", "feed_format", "open_feed", "stream_feed", "write_all", "Feed", "FeedSync"]

FEED_FORMATS: dict[str, tuple[str, ...]] = {
    "jsonl": (".jsonl", ".jl", ".ndjson"),
    "json": (".json",),
    "csv": (".csv",),
}
# SQLite's implicit row id of the results table (an ordinary rowid table): it only grows
# while the crawl inserts, so "rowid above the last one seen" is what a poll reads
ROWID = literal_column("results.rowid")
# a store transaction deletes a page's earlier items before it inserts; when they were the
# newest rows SQLite hands their rowids out again, so a poll looks this many rowids back
# (rows re-read are dropped by the pages already written)
ROWID_LOOKBACK = 5000
# Items of this many pages are read per query when new pages are found.
READ_CHUNK_PAGES = 500
# An export writes (and flushes) this many items at a time.
WRITE_CHUNK_ITEMS = 1000


class FeedError(ConfigurationError):
    """The output file cannot be used: unknown format, missing or read-only directory."""


def feed_format(path: str, fmt: str | None = None) -> str:
    """The format of ``path``: ``fmt`` when given, else from its extension; a sentence
    naming the accepted extensions otherwise."""
    if fmt:
        if fmt not in FEED_FORMATS:
            raise FeedError(f"unknown output format {fmt!r}; use one of {', '.join(FEED_FORMATS)}")
        return fmt
    suffix = Path(path).suffix.lower()
    for name, suffixes in FEED_FORMATS.items():
        if suffix in suffixes:
            return name
    known = " ".join(s for suffixes in FEED_FORMATS.values() for s in suffixes)
    raise FeedError(f"cannot tell the output format of {path!r} from its extension {suffix or '(none)'!r}; "
                    f"name the file with one of {known}, or give --format jsonl|json|csv")


def _cell(value: Any) -> Any:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (dict, list)) else value


class Feed:
    """One output file (or an open stream, such as stdout, for ``stream``); ``write(items)``
    appends and flushes, ``close()`` ends it well (a stream is ended, not closed)."""

    format = "jsonl"

    def __init__(self, path: str | None = None, *, stream: IO[str] | None = None) -> None:
        self.path = path or getattr(stream, "name", "<stream>")
        self.count = 0
        self._out: IO[str] | None = stream
        self._owns_out = stream is None
        if stream is None:
            self._open("w")

    def _open(self, mode: str) -> None:
        try:
            self._out = open(self.path, mode, encoding="utf-8", newline="")
        except FileNotFoundError:
            raise FeedError(f"cannot write {self.path!r}: the directory "
                            f"{str(Path(self.path).parent.resolve())!r} does not exist") from None
        except IsADirectoryError:
            raise FeedError(f"cannot write {self.path!r}: it is a directory") from None
        except OSError as exc:
            raise FeedError(f"cannot write {self.path!r}: {exc.strerror or exc}") from None

    @property
    def out(self) -> IO[str]:
        assert self._out is not None, "the feed is closed"
        return self._out

    def wants_rewrite(self, items: list[dict[str, Any]]) -> bool:
        """Whether ``items`` cannot be appended and the file must be written afresh."""
        return False

    def restart(self, columns: Iterable[str] = ()) -> None:
        """Empty the file (a resumed crawl writes every item of the project again)."""
        self.out.seek(0)
        self.out.truncate()
        self.count = 0
        self._begin()

    def _begin(self) -> None:
        pass

    def write(self, items: list[dict[str, Any]]) -> None:
        for item in items:
            self._write_one(item)
        self.count += len(items)
        self.out.flush()

    def _write_one(self, item: dict[str, Any]) -> None:
        self.out.write(json.dumps(item, ensure_ascii=False) + "\n")

    def close(self) -> None:
        if self._out is not None and not self._out.closed:
            self._end()
            if self._owns_out:
                self._out.close()
            else:
                self._out.flush()
                self._out = None

    def _end(self) -> None:
        pass


class JsonLinesFeed(Feed):
    format = "jsonl"


class JsonArrayFeed(Feed):
    """A JSON array written item by item: valid JSON once closed; after a crash the items
    are there and only the closing ``]`` is missing."""

    format = "json"

    def __init__(self, path: str | None = None, *, stream: IO[str] | None = None) -> None:
        super().__init__(path, stream=stream)
        self._begin()

    def _begin(self) -> None:
        self.out.write("[")
        self.out.flush()

    def _write_one(self, item: dict[str, Any]) -> None:
        self.out.write(("\n" if self.count == 0 else ",\n") + json.dumps(item, ensure_ascii=False))
        self.count += 1

    def write(self, items: list[dict[str, Any]]) -> None:
        for item in items:
            self._write_one(item)
        self.out.flush()

    def _end(self) -> None:
        self.out.write("\n]\n")


class CsvFeed(Feed):
    """CSV whose columns are every key seen so far, in first-seen order. An item with a new
    key makes :class:`FeedSync` rewrite the file from the database with the wider header;
    nested values are written as JSON."""

    format = "csv"

    def __init__(self, path: str | None = None, *, stream: IO[str] | None = None) -> None:
        if stream is None and path is not None:
            directory = Path(path).parent
            if not os.access(directory if str(directory) else ".", os.W_OK):
                # the rewrite writes a temporary file beside the output
                raise FeedError(f"cannot write {path!r}: its directory {str(directory.resolve())!r} is not writable")
        super().__init__(path, stream=stream)
        self.columns: list[str] = []
        self._writer: Any = None

    def set_columns(self, columns: Iterable[str]) -> None:
        """Write the header now, with every column known beforehand (an export makes a
        first pass over the items for them), so that nothing is ever rewritten."""
        self.columns = list(columns)
        self._writer = csv.DictWriter(self.out, fieldnames=self.columns, extrasaction="ignore")
        self._writer.writeheader()

    def wants_rewrite(self, items: list[dict[str, Any]]) -> bool:
        if self._writer is None:
            return False  # no header yet: the first items set it
        known = set(self.columns)
        return any(key not in known for item in items for key in item)

    def restart(self, columns: Iterable[str] = ()) -> None:
        """Write the file afresh with ``columns``: to a temporary file beside it, renamed
        over it, so a reader (or a crash) sees the old file or the new one, never half."""
        self.columns = list(columns)
        directory = str(Path(self.path).parent) or "."
        handle, temp_path = tempfile.mkstemp(prefix=".crawlcluster-", suffix=".csv.tmp", dir=directory)
        os.close(handle)
        os.chmod(temp_path, stat.S_IMODE(os.stat(self.path).st_mode))  # mkstemp's 0600 would stick
        self.out.close()
        self._out = open(temp_path, "w", encoding="utf-8", newline="")
        self._temp_path = temp_path
        self._writer = csv.DictWriter(self.out, fieldnames=self.columns, extrasaction="ignore")
        if self.columns:
            self._writer.writeheader()
        self.count = 0

    def commit_restart(self) -> None:
        """Rename the rewritten file over the output; keep appending to it."""
        self.out.flush()
        os.fsync(self.out.fileno())
        self.out.close()
        os.replace(self._temp_path, self.path)
        self._open("a")
        self._writer = csv.DictWriter(self.out, fieldnames=self.columns, extrasaction="ignore")

    def write(self, items: list[dict[str, Any]]) -> None:
        if self._writer is None:  # the first items set the header
            self.columns = list(dict.fromkeys(key for item in items for key in item))
            self._writer = csv.DictWriter(self.out, fieldnames=self.columns, extrasaction="ignore")
            self._writer.writeheader()
        super().write(items)

    def _write_one(self, item: dict[str, Any]) -> None:
        self._writer.writerow({k: _cell(v) for k, v in item.items()})


FEED_CLASSES: dict[str, type[Feed]] = {"jsonl": JsonLinesFeed, "json": JsonArrayFeed, "csv": CsvFeed}


def open_feed(path: str, fmt: str | None = None) -> Feed:
    """Open ``path`` for writing in its format, before any fetch: a wrong extension, a
    missing directory or a read-only one is a :class:`FeedError` with a sentence."""
    return FEED_CLASSES[feed_format(path, fmt)](path)


def stream_feed(out: IO[str], fmt: str = "jsonl") -> Feed:
    """A feed on an open stream (stdout, a file the caller opened) in ``fmt``."""
    return FEED_CLASSES[feed_format("", fmt)](stream=out)


def write_all(feed: Feed, items: Callable[[], Iterable[dict[str, Any]]],
              progress: Callable[[int], None] | None = None) -> int:
    """Write every item that ``items()`` yields into ``feed`` and end it; return how many.
    ``items`` is called twice for a CSV feed (the header needs every key first), so it
    streams rather than holds the items; ``progress(n)`` hears of each chunk written.
    The one writer behind ``crawlcluster results``, ``Crawl.export`` and nothing else: the
    crawl's live file goes through :class:`FeedSync`, with the same feed classes."""
    if isinstance(feed, CsvFeed):
        feed.set_columns(dict.fromkeys(key for item in items() for key in item))
    chunk: list[dict[str, Any]] = []
    for item in items():
        chunk.append(item)
        if len(chunk) >= WRITE_CHUNK_ITEMS:
            feed.write(chunk)
            if progress:
                progress(len(chunk))
            chunk = []
    if chunk:
        feed.write(chunk)
        if progress:
            progress(len(chunk))
    feed.close()
    return feed.count


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
        self._last_rowid = 0
        self.closed = False

    @property
    def count(self) -> int:
        return self.feed.count

    def start(self) -> None:
        """Write every item the project already has (a resumed crawl): the file then holds
        the crawl's items once each, however many runs it took."""
        self._last_rowid = self._max_rowid()
        if self._has_items():
            self._rewrite()

    def _has_items(self) -> bool:
        with self.engine.connect() as conn:
            stmt = select(results.c.task_id).where(results.c.project == self.project).limit(1)
            return conn.execute(stmt).first() is not None

    def _max_rowid(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(select(func.max(ROWID)).select_from(results)).scalar() or 0

    def poll(self) -> int:
        """Write the pages stored since the last poll; return how many items were written.

        New items are found by SQLite's rowid, which grows with every insert: a poll reads
        only the rows inserted since the previous one (through the primary key), however
        many items the file holds, and a transaction that committed late is still seen,
        because its rows' rowids are above the last one seen whenever it commits."""
        stmt = (select(ROWID, results.c.task_id, results.c.project)
                .select_from(results).where(ROWID > self._last_rowid - ROWID_LOOKBACK).order_by(ROWID))
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        if rows:
            self._last_rowid = max(self._last_rowid, rows[-1][0])
        fresh = list(dict.fromkeys(task_id for _rowid, task_id, project in rows
                                   if project == self.project and task_id not in self.written))
        return self._write_pages(fresh)

    def finish(self) -> int:
        """A full pass over the project's items, then close the feed; return the total written."""
        if self.closed:
            return self.feed.count
        stmt = select(results.c.task_id).distinct().where(results.c.project == self.project)
        with self.engine.connect() as conn:
            missing = [task_id for (task_id,) in conn.execute(stmt) if task_id not in self.written]
        self._write_pages(missing)
        self.close()
        return self.feed.count

    def close(self) -> None:
        """Close the feed as it is (a ``.json`` array gets its ``]``); safe to call twice."""
        if not self.closed:
            self.closed = True
            self.feed.close()

    def _pages(self, task_ids: list[str]) -> Iterator[tuple[str, list[dict[str, Any]]]]:
        for start in range(0, len(task_ids), READ_CHUNK_PAGES):
            chunk = sorted(task_ids[start:start + READ_CHUNK_PAGES])
            stmt = (select(results.c.task_id, results.c.item)
                    .where(results.c.task_id.in_(chunk)).order_by(results.c.task_id, results.c.item_index))
            with self.engine.connect() as conn:
                rows = conn.execute(stmt).all()
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
        """Write the file afresh from every item the project has stored now."""
        stmt = (select(results.c.task_id, results.c.item).where(results.c.project == self.project)
                .order_by(results.c.task_id, results.c.item_index))
        columns: dict[str, None] = {}
        with self.engine.connect() as conn:
            for _task_id, item in conn.execution_options(stream_results=True, yield_per=1000).execute(stmt):
                columns.update(dict.fromkeys(item))
        self.feed.restart(columns)
        self.written.clear()
        known = set(columns)
        with self.engine.connect() as conn:
            pages: dict[str, list[dict[str, Any]]] = {}
            for task_id, item in conn.execution_options(stream_results=True, yield_per=1000).execute(stmt):
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
