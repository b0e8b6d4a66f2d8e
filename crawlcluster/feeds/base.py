"""What every item feed is: the output formats and their extensions, the format chosen for a
path (``.gz`` after any extension compresses), and :class:`Feed`, one output file or stream
that items are appended to and that is ended well (the formats are its subclasses beside
this module)."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import IO, Any, Iterable, cast

from crawlcluster.errors import ConfigurationError

FEED_FORMATS: dict[str, tuple[str, ...]] = {
    "jsonl": (".jsonl", ".jl", ".ndjson"),
    "json": (".json",),
    "csv": (".csv",),
    "xml": (".xml",),
    "parquet": (".parquet",),
}
# the formats that can be written to a stream (stdout, a download): all but the binary one
STREAM_FORMATS: tuple[str, ...] = ("jsonl", "json", "csv", "xml")
# written after any extension, it compresses the file with gzip
COMPRESSED_SUFFIX = ".gz"
# what `-o` does to a file that already holds items, by format
NOT_APPENDABLE = {"json": "a JSON array", "xml": "an XML document", "parquet": "a Parquet file"}


class FeedError(ConfigurationError):
    """The output file cannot be used: unknown format, missing or read-only directory, a
    file that its format cannot append to."""


def is_compressed(path: str) -> bool:
    return path.lower().endswith(COMPRESSED_SUFFIX)


def known_extensions() -> str:
    return " ".join(s for suffixes in FEED_FORMATS.values() for s in suffixes)


def feed_format(path: str, fmt: str | None = None) -> str:
    """The format of ``path``: ``fmt`` when given, else from its extension (the one before a
    final ``.gz``); a one-line sentence naming the accepted extensions otherwise."""
    if fmt:
        if fmt not in FEED_FORMATS:
            raise FeedError(f"unknown output format {fmt!r}; use one of {', '.join(FEED_FORMATS)}")
        return fmt
    name = path[:-len(COMPRESSED_SUFFIX)] if is_compressed(path) else path
    suffix = Path(name).suffix.lower()
    for format_name, suffixes in FEED_FORMATS.items():
        if suffix in suffixes:
            return format_name
    raise FeedError(f"cannot tell the output format of {path!r} from its extension {suffix or '(none)'!r}; "
                    f"name the file with one of {known_extensions()} (add .gz to compress), "
                    f"or give --format {'|'.join(FEED_FORMATS)}")


def has_content(path: str) -> bool:
    try:
        return os.path.getsize(path) > 0
    except OSError:
        return False


def refuse_append(path: str, fmt: str) -> None:
    """``-o`` on a file that holds a whole document: refused before anything is fetched, as
    the document would have to be reopened (Scrapy appends and leaves invalid JSON)."""
    if fmt in NOT_APPENDABLE and has_content(path):
        raise FeedError(f"{path} exists and {NOT_APPENDABLE[fmt]} cannot be appended to: -O {path} "
                        f"overwrites it (-o appends to .jsonl and .csv files)")


def open_text(path: str, mode: str, compressed: bool | None = None) -> IO[str]:
    """``path`` opened as UTF-8 text (through gzip when ``compressed``, by default when it
    ends in ``.gz``), or a :class:`FeedError` with a sentence."""
    try:
        if is_compressed(path) if compressed is None else compressed:
            return cast(IO[str], gzip.open(path, mode + "t", encoding="utf-8", newline=""))
        return open(path, mode, encoding="utf-8", newline="")
    except FileNotFoundError:
        raise FeedError(f"cannot write {path!r}: the directory "
                        f"{str(Path(path).parent.resolve())!r} does not exist") from None
    except IsADirectoryError:
        raise FeedError(f"cannot write {path!r}: it is a directory") from None
    except OSError as exc:
        raise FeedError(f"cannot write {path!r}: {exc.strerror or exc}") from None


class Feed:
    """One output file (or an open stream, such as stdout, for ``stream``); ``write(items)``
    appends and flushes, ``close()`` ends it well (a stream is ended, not closed).

    ``append`` (``-o``) keeps what the file holds and adds to it, for the formats that can
    (``appendable``); the others refuse a file that is not empty. Otherwise (``-O``) the
    file is written afresh. A ``live`` feed is written while the crawl runs; the others once,
    at the end (:meth:`write_all`)."""

    format = "jsonl"
    appendable = True
    live = True

    def __init__(self, path: str | None = None, *, stream: IO[str] | None = None,
                 append: bool = False) -> None:
        self.path: str = path or str(getattr(stream, "name", "<stream>"))
        self.count = 0
        self.append = append and stream is None
        self._out: IO[str] | None = stream
        self._owns_out = stream is None
        if stream is None:
            if self.append:
                refuse_append(self.path, self.format)
            self._open("a" if self.append and self.appendable else "w")
        self._begin()

    def _open(self, mode: str) -> None:
        self._out = open_text(self.path, mode)

    @property
    def out(self) -> IO[str]:
        assert self._out is not None, "the feed is closed"
        return self._out

    def wants_rewrite(self, items: list[dict[str, Any]]) -> bool:
        """Whether ``items`` cannot be appended and the file must be written afresh."""
        return False

    def restart(self, columns: Iterable[str] = ()) -> None:
        """Empty the file (a resumed crawl writes every item of the project again)."""
        self.out.close()
        self._open("w")
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
