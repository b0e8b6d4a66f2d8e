"""What every item feed is: the output formats and their extensions, the format chosen for a
path, and :class:`Feed`, one output file or stream that items are appended to and that is
ended well (the formats are its subclasses beside this module)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any, Iterable

from crawlcluster.errors import ConfigurationError

FEED_FORMATS: dict[str, tuple[str, ...]] = {
    "jsonl": (".jsonl", ".jl", ".ndjson"),
    "json": (".json",),
    "csv": (".csv",),
}


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



class Feed:
    """One output file (or an open stream, such as stdout, for ``stream``); ``write(items)``
    appends and flushes, ``close()`` ends it well (a stream is ended, not closed)."""

    format = "jsonl"

    def __init__(self, path: str | None = None, *, stream: IO[str] | None = None) -> None:
        self.path: str = path or str(getattr(stream, "name", "<stream>"))
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


