"""The CSV feed: a header from the items' keys, widened by rewriting the file when an item
brings a new key; nested values are written as JSON. ``-o`` appends to a CSV file under its
own header (no second header line); an item with a key that header lacks rewrites the file
with the wider header, the rows it held first, as they were. A cell that begins with ``=``,
``+``, ``-``, ``@``, a tab or a carriage return gets a leading single quote, as OWASP advises
against CSV (formula) injection: crawled text is whatever a site wrote, and a spreadsheet
would run such a cell as a formula. ``keep_formulas=True`` writes them verbatim."""

from __future__ import annotations

import csv
import gzip
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import IO, Any, Iterable

from crawlcluster.feeds.base import Feed, FeedError, has_content, is_compressed, open_text

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any, keep_formulas: bool = False) -> Any:
    if isinstance(value, (dict, list)):
        value = json.dumps(value, ensure_ascii=False)
    if not keep_formulas and isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def _existing_header(path: str) -> tuple[list[str], int]:
    """The header of a CSV file ``-o`` appends to, and how many rows it holds."""
    try:
        with open_text(path, "r") as handle:
            reader = csv.reader(handle)
            header = next(reader, [])
            return header, sum(1 for _ in reader)
    except (EOFError, gzip.BadGzipFile, csv.Error, UnicodeDecodeError) as exc:
        raise FeedError(f"cannot append to {path}: it is not a whole CSV file ({exc}); "
                        f"-O {path} overwrites it") from None


class CsvFeed(Feed):
    """CSV whose columns are every key seen so far, in first-seen order (after the header
    of the file ``-o`` appends to). An item with a new key makes :class:`FeedSync` rewrite
    the file with the wider header; nested values are written as JSON; formula-leading
    cells are quoted unless ``keep_formulas``."""

    format = "csv"

    def __init__(self, path: str | None = None, *, stream: IO[str] | None = None,
                 keep_formulas: bool = False, append: bool = False) -> None:
        self.keep_formulas = keep_formulas
        self.columns: list[str] = []
        self._writer: Any = None
        # the header and row count of the file before this feed appended to it: a rewrite
        # keeps those rows first
        self.prior_columns: list[str] = []
        self.prior_rows = 0
        self._temp_path: str | None = None
        self._commit_on_close = False
        if stream is None and path is not None:
            directory = Path(path).parent
            if not os.access(directory if str(directory) else ".", os.W_OK):
                # the rewrite writes a temporary file beside the output
                raise FeedError(f"cannot write {path!r}: "
                                f"its directory {str(directory.resolve())!r} is not writable")
            if append and has_content(path):
                self.prior_columns, self.prior_rows = _existing_header(path)
        super().__init__(path, stream=stream, append=append)
        if self.prior_columns:
            self.columns = list(self.prior_columns)
            self._writer = self._dict_writer()  # the file has its header

    def _dict_writer(self) -> Any:
        return csv.DictWriter(self.out, fieldnames=self.columns, extrasaction="ignore")

    def set_columns(self, columns: Iterable[str]) -> None:
        """Write the header now, with every column known beforehand (an export makes a
        first pass over the items for them), so that nothing is ever rewritten (but a file
        appended to whose header lacks some of them, once, now)."""
        columns = list(columns)
        if self.prior_columns:
            if not set(columns) <= set(self.prior_columns):
                self.restart(columns)
                self._commit_on_close = True
            return
        self.columns = columns
        self._writer = self._dict_writer()
        self._write_header()

    def wants_rewrite(self, items: list[dict[str, Any]]) -> bool:
        if self._writer is None:
            return False  # no header yet: the first items set it
        known = set(self.columns)
        return any(key not in known for item in items for key in item)

    def restart(self, columns: Iterable[str] = ()) -> None:
        """Write the file afresh with the file's earlier header and ``columns``: to a
        temporary file beside it, renamed over it, so a reader (or a crash) sees the old
        file or the new one, never half. The rows the file held before ``-o`` appended to
        it are copied first, as they were."""
        self.columns = list(dict.fromkeys([*self.prior_columns, *columns]))
        directory = str(Path(self.path).parent) or "."
        suffix = ".csv.gz.tmp" if is_compressed(self.path) else ".csv.tmp"
        handle, temp_path = tempfile.mkstemp(prefix=".crawlcluster-", suffix=suffix, dir=directory)
        os.close(handle)
        os.chmod(temp_path, stat.S_IMODE(os.stat(self.path).st_mode))  # mkstemp's 0600 would stick
        self.out.close()
        self._out = open_text(temp_path, "w", compressed=is_compressed(self.path))
        self._temp_path = temp_path
        self._writer = self._dict_writer()
        if self.columns:
            self._write_header()
        if self.prior_rows:
            with open_text(self.path, "r") as before:
                reader = csv.DictReader(before)
                for _, row in zip(range(self.prior_rows), reader):
                    self._writer.writerow(row)
        self.count = 0

    def commit_restart(self) -> None:
        """Rename the rewritten file over the output; keep appending to it."""
        assert self._temp_path is not None
        self.out.flush()
        self.out.close()
        with open(self._temp_path, "rb") as written:
            os.fsync(written.fileno())
        os.replace(self._temp_path, self.path)
        self._temp_path = None
        self._open("a")
        self._writer = self._dict_writer()

    def write(self, items: list[dict[str, Any]]) -> None:
        if self._writer is None:  # the first items set the header
            self.columns = list(dict.fromkeys(key for item in items for key in item))
            self._writer = self._dict_writer()
            self._write_header()
        super().write(items)

    def close(self) -> None:
        """End the file: an export's rewrite (a wider header than the file appended to had)
        is renamed over it; a live rewrite cut short is dropped, the file kept as it was."""
        if self._temp_path is not None:
            if self._commit_on_close:
                self.commit_restart()
            else:
                self.out.close()
                os.unlink(self._temp_path)
                self._temp_path = None
                self._out = None
        super().close()

    def _write_header(self) -> None:
        self._writer.writerow({column: _cell(column, self.keep_formulas) for column in self.columns})

    def _write_one(self, item: dict[str, Any]) -> None:
        self._writer.writerow({k: _cell(v, self.keep_formulas) for k, v in item.items()})
