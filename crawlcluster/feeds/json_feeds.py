"""The JSON feeds: JSON lines (one object per line, each line complete once flushed; ``-o``
appends to them) and a JSON array written item by item (a whole document: ``-o`` refuses a
file that holds one, ``-O`` overwrites it)."""

from __future__ import annotations

import json
from typing import Any

from crawlcluster.feeds.base import Feed


class JsonLinesFeed(Feed):
    format = "jsonl"


class JsonArrayFeed(Feed):
    """A JSON array written item by item: valid JSON once closed (which Ctrl-C, SIGTERM and
    a second Ctrl-C all do); after a ``kill -9`` the items are there and only the closing
    ``]`` is missing (and the last item may be cut short)."""

    format = "json"
    appendable = False

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
