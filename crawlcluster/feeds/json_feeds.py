"""The JSON feeds: JSON lines (one object per line, each line complete once flushed) and a
JSON array written item by item."""

from __future__ import annotations

import json
from typing import IO, Any

from crawlcluster.feeds.base import Feed


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

