"""The CSV feed: a header from the items' keys, widened by rewriting the file when an item
brings a new key; nested values are written as JSON. A cell that begins with ``=``, ``+``,
``-``, ``@``, a tab or a carriage return gets a leading single quote, as OWASP advises
against CSV (formula) injection: crawled text is whatever a site wrote, and a spreadsheet
would run such a cell as a formula. ``keep_formulas=True`` writes them verbatim."""

from __future__ import annotations

import csv
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import IO, Any, Iterable

from crawlcluster.feeds.base import Feed, FeedError

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any, keep_formulas: bool = False) -> Any:
    if isinstance(value, (dict, list)):
        value = json.dumps(value, ensure_ascii=False)
    if not keep_formulas and isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


class CsvFeed(Feed):
    """CSV whose columns are every key seen so far, in first-seen order. An item with a new
    key makes :class:`FeedSync` rewrite the file from the database with the wider header;
    nested values are written as JSON; formula-leading cells are quoted unless
    ``keep_formulas``."""

    format = "csv"

    def __init__(self, path: str | None = None, *, stream: IO[str] | None = None,
                 keep_formulas: bool = False) -> None:
        self.keep_formulas = keep_formulas
        if stream is None and path is not None:
            directory = Path(path).parent
            if not os.access(directory if str(directory) else ".", os.W_OK):
                # the rewrite writes a temporary file beside the output
                raise FeedError(f"cannot write {path!r}: "
                                f"its directory {str(directory.resolve())!r} is not writable")
        super().__init__(path, stream=stream)
        self.columns: list[str] = []
        self._writer: Any = None

    def set_columns(self, columns: Iterable[str]) -> None:
        """Write the header now, with every column known beforehand (an export makes a
        first pass over the items for them), so that nothing is ever rewritten."""
        self.columns = list(columns)
        self._writer = csv.DictWriter(self.out, fieldnames=self.columns, extrasaction="ignore")
        self._write_header()

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
            self._write_header()
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
            self._write_header()
        super().write(items)

    def _write_header(self) -> None:
        self._writer.writerow({column: _cell(column, self.keep_formulas) for column in self.columns})

    def _write_one(self, item: dict[str, Any]) -> None:
        self._writer.writerow({k: _cell(v, self.keep_formulas) for k, v in item.items()})

