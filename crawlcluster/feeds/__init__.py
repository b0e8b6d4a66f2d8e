"""Item feeds: the one place output formats live. ``crawlcluster crawl -o FILE`` (written
while the crawl runs), ``crawlcluster results -o FILE`` and ``Crawl.export`` all write
through the feed classes here.

A feed is opened (so checked) before the first fetch, then :class:`FeedSync` copies the
items the store stage has committed into it every half second (the rows inserted since
its last poll, by SQLite rowid), a page's items at once,
each page once, and flushes. A crash or a ``kill -9`` therefore leaves every item that
was in the file's last flush; the database still holds them all (``crawlcluster
results``). Formats come from the file's extension
(``.gz`` after any of them compresses the file with gzip):

    .jsonl .jl .ndjson   one JSON object per line
    .json                a JSON array: ``[`` at once, ``]`` when the crawl ends or stops
    .csv                 a header from the items' keys; when an item brings a new key the
                         file is rewritten with the wider header (to a temporary file
                         beside it, then renamed over it)
    .xml                 Scrapy's XML exporter's shape: ``<items>``, an ``<item>`` per line
    .parquet             written whole when the crawl ends or stops (pyarrow, an extra)

``append`` (``-o``) adds to what a .jsonl or .csv file holds (under the CSV's own header)
and refuses a .json, .xml or .parquet file that is not empty, naming ``-O``; without it
(``-O``) the file is written afresh.

The formats live in ``base`` (the :class:`Feed` every format is), ``json_feeds``,
``csv_feed``, ``xml_feed``, ``parquet_feed``; the live copy of a crawl in ``sync``; choosing a
format and exporting are here.
"""

from __future__ import annotations

import logging
from typing import IO, Any, Callable, Iterable

from crawlcluster.feeds.base import FEED_FORMATS, STREAM_FORMATS, Feed, FeedError, feed_format
from crawlcluster.feeds.csv_feed import CsvFeed
from crawlcluster.feeds.json_feeds import JsonArrayFeed, JsonLinesFeed
from crawlcluster.feeds.parquet_feed import ParquetFeed
from crawlcluster.feeds.sync import FeedSync
from crawlcluster.feeds.xml_feed import XmlFeed

logger = logging.getLogger(__name__)

__all__ = ["FEED_FORMATS", "STREAM_FORMATS", "FeedError", "feed_format", "open_feed", "stream_feed",
           "write_all", "Feed", "FeedSync"]

# An export writes (and flushes) this many items at a time.
WRITE_CHUNK_ITEMS = 1000

FEED_CLASSES: dict[str, type[Feed]] = {"jsonl": JsonLinesFeed, "json": JsonArrayFeed, "csv": CsvFeed,
                                        "xml": XmlFeed, "parquet": ParquetFeed}


def open_feed(path: str, fmt: str | None = None, *, keep_formulas: bool = False,
              append: bool = False) -> Feed:
    """Open ``path`` for writing in its format, before any fetch: a wrong extension, a
    missing directory or a read-only one, a missing extra, or ``append`` to a format that
    cannot append (a file that is not empty) is a :class:`FeedError` with a sentence. A
    CSV quotes cells that a spreadsheet would run as formulas unless ``keep_formulas``."""
    fmt = feed_format(path, fmt)
    if fmt == "csv":
        return CsvFeed(path, keep_formulas=keep_formulas, append=append)
    return FEED_CLASSES[fmt](path, append=append)


def stream_feed(out: IO[str], fmt: str = "jsonl", *, keep_formulas: bool = False) -> Feed:
    """A feed on an open stream (stdout, a file the caller opened) in ``fmt``: any format
    but Parquet, which is written to files only."""
    fmt = feed_format("", fmt)
    if fmt not in STREAM_FORMATS:
        raise FeedError(f"{fmt} is written to a file only: -o FILE.{fmt}")
    if fmt == "csv":
        return CsvFeed(stream=out, keep_formulas=keep_formulas)
    return FEED_CLASSES[fmt](stream=out)


def write_all(feed: Feed, items: Callable[[], Iterable[dict[str, Any]]],
              progress: Callable[[int], None] | None = None) -> int:
    """Write every item that ``items()`` yields into ``feed`` and end it; return how many.
    ``items`` is called twice for a CSV feed (the header needs every key first), so it
    streams rather than holds the items; ``progress(n)`` hears of each chunk written.
    The one writer behind ``crawlcluster results``, ``Crawl.export`` and nothing else: the
    crawl's live file goes through :class:`FeedSync`, with the same feed classes (and a
    Parquet file written at its end through this function)."""
    if isinstance(feed, ParquetFeed):
        return feed.write_all(items, progress)
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


