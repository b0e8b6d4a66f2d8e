"""The Parquet feed, an optional extra (``pip install 'crawlcluster[parquet]'``, pyarrow):
written once, when the crawl ends or stops, from the database, because a Parquet file is
only readable once its footer is written.

A column's type comes from its values over every item (a first pass): booleans, integers,
numbers (integers and floats together), text, and lists whose elements are all of one such
kind are Parquet's own types; a column whose values are of more than one kind, or objects,
holds their JSON text. A missing key is null. The file is written beside the output and
renamed over it, so a crawl killed while it is written leaves the earlier file, or none."""

from __future__ import annotations

import gzip
import json
import os
import uuid
from pathlib import Path
from typing import IO, Any, Callable, Iterable

from crawlcluster.feeds.base import Feed, FeedError, is_compressed, refuse_append

# items per row group (held in memory while a group is built)
ROW_GROUP_ITEMS = 10_000
INT64 = (-(2 ** 63), 2 ** 63 - 1)
SCALARS = {bool: "bool", int: "int", float: "float", str: "str"}


def require_pyarrow() -> Any:
    """pyarrow's modules, or a one-line sentence naming the extra."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise FeedError("writing .parquet needs pyarrow: pip install 'crawlcluster[parquet]'") from None
    return pyarrow


def _kind(value: Any) -> str | None:
    if value is None:
        return None
    kind = SCALARS.get(type(value))
    if kind == "int" and not INT64[0] <= value <= INT64[1]:
        return "json"
    if kind:
        return kind
    return "list" if isinstance(value, (list, tuple)) else "json"


class _Column:
    """The kinds of value one key has held, and of its lists' elements."""

    def __init__(self) -> None:
        self.kinds: set[str] = set()
        self.elements: set[str] = set()

    def see(self, value: Any) -> None:
        kind = _kind(value)
        if kind is None:
            return
        self.kinds.add(kind)
        if kind == "list":
            self.elements.update(k for k in map(_kind, value) if k is not None)

    def arrow_type(self, pa: Any) -> Any:
        """pyarrow's type for this column; None when it holds JSON text."""
        scalar = _scalar_type(pa, self.kinds)
        if scalar is not None or not self.kinds:
            return scalar or pa.string()
        if self.kinds == {"list"}:
            element = _scalar_type(pa, self.elements) if self.elements else pa.string()
            if element is not None:
                return pa.list_(element)
        return None


def _scalar_type(pa: Any, kinds: set[str]) -> Any:
    if kinds == {"bool"}:
        return pa.bool_()
    if kinds == {"int"}:
        return pa.int64()
    if kinds and kinds <= {"int", "float"}:
        return pa.float64()
    if kinds == {"str"}:
        return pa.string()
    return None


class ParquetFeed(Feed):
    """A Parquet file written whole by :meth:`write_all` (not live); never a stream."""

    format = "parquet"
    appendable = False
    live = False

    def __init__(self, path: str | None = None, *, stream: IO[str] | None = None,
                 append: bool = False) -> None:
        if stream is not None or path is None:
            raise FeedError("Parquet is a binary file: write it with -o FILE.parquet, not to a stream")
        self.path = path
        self.count = 0
        self.append = append
        self._out = None
        self._owns_out = False
        require_pyarrow()
        if append:
            refuse_append(path, self.format)
        directory = Path(path).parent
        where = repr(str(directory.resolve()))
        if not directory.is_dir():
            raise FeedError(f"cannot write {path!r}: the directory {where} does not exist")
        if Path(path).is_dir():
            raise FeedError(f"cannot write {path!r}: it is a directory")
        if not os.access(directory, os.W_OK):
            raise FeedError(f"cannot write {path!r}: its directory {where} is not writable")

    def write(self, items: list[dict[str, Any]]) -> None:
        raise FeedError("a Parquet file is written whole (write_all), not item by item")

    def write_all(self, items: Callable[[], Iterable[dict[str, Any]]],
                  progress: Callable[[int], None] | None = None) -> int:
        """Write every item ``items()`` yields (called twice: the types first); return how many."""
        pa = require_pyarrow()
        columns: dict[str, _Column] = {}
        for item in items():
            for key, value in item.items():
                columns.setdefault(key, _Column()).see(value)
        types = {key: column.arrow_type(pa) for key, column in columns.items()}
        schema = pa.schema([(key, kind or pa.string()) for key, kind in types.items()])
        as_json = [key for key, kind in types.items() if kind is None]
        directory = str(Path(self.path).parent) or "."
        # a name of its own beside the output, created as open() creates files (the umask's mode)
        temp_path = os.path.join(directory, f".crawlcluster-{uuid.uuid4().hex}.parquet.tmp")
        try:
            self.count = 0
            with open(temp_path, "xb") as raw:
                sink: Any = gzip.GzipFile(fileobj=raw, mode="wb") if is_compressed(self.path) else raw
                with pa.parquet.ParquetWriter(sink, schema) as writer:
                    group: list[dict[str, Any]] = []
                    for item in items():
                        group.append(item)
                        if len(group) >= ROW_GROUP_ITEMS:
                            self._write_group(pa, writer, schema, group, as_json, progress)
                            group = []
                    if group or not self.count:
                        self._write_group(pa, writer, schema, group, as_json, progress)
                if sink is not raw:
                    sink.close()
                raw.flush()
                os.fsync(raw.fileno())
            os.replace(temp_path, self.path)
        finally:
            if os.path.exists(temp_path):
                os.unlink(temp_path)
        return self.count

    def _write_group(self, pa: Any, writer: Any, schema: Any, group: list[dict[str, Any]], as_json: list[str],
                     progress: Callable[[int], None] | None) -> None:
        rows = [{**item, **{key: json.dumps(item[key], ensure_ascii=False)
                            for key in as_json if item.get(key) is not None}} for item in group]
        writer.write_table(pa.Table.from_pylist(rows, schema=schema))
        self.count += len(group)
        if progress and group:
            progress(len(group))

    def close(self) -> None:
        pass
