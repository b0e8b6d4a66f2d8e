"""Item pipelines, the spider's side: which pipeline classes a spider names, resolved in one
place, and the :class:`DropItem` exception a pipeline raises to drop an item.

A spider names its pipelines with a class attribute ``pipelines = [...]`` (classes or
``"pkg.mod:Class"`` paths, run in that order) or Scrapy's way, ``custom_settings =
{"ITEM_PIPELINES": {"pkg.mod.Class": 300}}`` (run by number, lowest first; ``None`` turns one
off). :func:`pipeline_classes` reads both; the parse stage runs them
(:mod:`workers.pipelines`). Import paths obey the spider allow-list
(``CRAWLCLUSTER_SPIDER_PACKAGES``), checked before anything is imported, as for spiders.
Importing this module builds no Celery app.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

from crawlcluster.errors import ConfigurationError
from crawlcluster.spider import module_allowed, spider_packages, split_spider_path

__all__ = ["DropItem", "PipelineCrawler", "PipelineSettings", "is_drop", "pipeline_classes"]


class DropItem(Exception):
    """Raised by a pipeline's ``process_item`` to drop an item: it is not stored, and the
    crawl's statistics count it under the exception's message (its reason). Scrapy's
    ``scrapy.exceptions.DropItem`` is accepted the same way when Scrapy is installed."""


def is_drop(exc: BaseException) -> bool:
    """Whether ``exc`` drops an item: our :class:`DropItem`, or Scrapy's when a pipeline
    imported it (Scrapy is never imported here: a pipeline that raises it has done so)."""
    if isinstance(exc, DropItem):
        return True
    scrapy_exceptions = sys.modules.get("scrapy.exceptions")
    scrapy_drop = getattr(scrapy_exceptions, "DropItem", None)
    return isinstance(scrapy_drop, type) and isinstance(exc, scrapy_drop)


def _order(value: Any, name: str, spider: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{spider}.custom_settings['ITEM_PIPELINES'][{name!r}] is {value!r}; "
                                 "give each pipeline an order number (0-1000, lowest runs first) or None")
    return float(value)


def load_pipeline_class(path: str, spider: str, packages: tuple[str, ...] | None = None) -> type:
    """Import the pipeline class at ``path`` (``pkg.mod:Class`` or Scrapy's ``pkg.mod.Class``),
    only from the allowed packages. Every failure is a :class:`ConfigurationError` that names
    the spider and the path."""
    try:
        module_name, qualname = split_spider_path(path)
    except ConfigurationError:
        raise ConfigurationError(f"{spider}: pipeline path {path!r} must look like 'package.module:Class'") \
            from None
    allowed = packages if packages is not None else spider_packages()
    if not module_allowed(module_name, allowed):
        raise ConfigurationError(
            f"{spider}: pipeline {path!r} is outside CRAWLCLUSTER_SPIDER_PACKAGES "
            f"(allowed: {', '.join(allowed)}); pipelines are imported from the same packages as spiders")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(
            f"{spider}: cannot import pipeline module {module_name!r} for {path!r}: {exc}") from None
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - a module that raises or exits at import
        raise ConfigurationError(
            f"{spider}: pipeline {path!r} raised at import: {type(exc).__name__}: {exc}") from None
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ConfigurationError(
                f"{spider}: module {module_name!r} has no {qualname!r} (pipeline {path!r})")
    return _checked(obj, path, spider)


PIPELINE_METHODS = ("process_item", "open_spider", "close_spider")


def _checked(obj: Any, what: str, spider: str) -> type:
    if not isinstance(obj, type):
        raise ConfigurationError(f"{spider}: pipeline {what!r} is not a class")
    if not any(callable(getattr(obj, name, None)) for name in PIPELINE_METHODS):
        raise ConfigurationError(f"{spider}: pipeline {what!r} has none of process_item, open_spider, "
                                 "close_spider")
    return obj


def pipeline_classes(spider_cls: type, packages: tuple[str, ...] | None = None) -> list[type]:
    """The pipeline classes of ``spider_cls`` in the order items go through them: those of
    its ``pipelines`` list as listed, then those of ``custom_settings["ITEM_PIPELINES"]`` by
    number (ties in the order given). A class named twice runs once, at its first place; one
    whose number is ``None`` is left out, as in Scrapy. Raises :class:`ConfigurationError`
    with a sentence for a malformed entry, a path outside the allow-list or one that does
    not import."""
    spider = spider_cls.__name__
    listed = getattr(spider_cls, "pipelines", None) or []
    if isinstance(listed, (str, type)) or not isinstance(listed, (list, tuple)):
        raise ConfigurationError(f"{spider}.pipelines must be a list of classes or 'pkg.mod:Class' paths, "
                                 f"not {type(listed).__name__}")
    custom = getattr(spider_cls, "custom_settings", None) or {}
    by_number = custom.get("ITEM_PIPELINES") if isinstance(custom, Mapping) else None
    if by_number is not None and not isinstance(by_number, Mapping):
        raise ConfigurationError(f"{spider}.custom_settings['ITEM_PIPELINES'] must be a dict of "
                                 f"{{'pkg.mod.Class': order}}, not {type(by_number).__name__}")
    numbered = [(order, index, entry) for index, (entry, value) in enumerate((by_number or {}).items())
                if (order := _order(value, str(entry), spider)) is not None]
    switched_off = {entry for entry, value in (by_number or {}).items() if value is None}
    entries = [*listed, *[entry for *_, entry in sorted(numbered, key=lambda e: e[:2])]]
    classes: list[type] = []
    for entry in entries:
        if entry in switched_off:
            continue
        if isinstance(entry, str):
            cls = load_pipeline_class(entry, spider, packages)
        else:
            cls = _checked(entry, getattr(entry, "__qualname__", repr(entry)), spider)
        if cls not in classes:
            classes.append(cls)
    return classes


class PipelineSettings(Mapping[str, Any]):
    """What a pipeline's ``from_crawler(crawler)`` finds in ``crawler.settings`` (and
    ``from_settings(settings)`` receives): the spider's ``custom_settings`` with the project's
    settings over them, read-only, with Scrapy's typed getters."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = dict(values)

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def getbool(self, name: str, default: bool = False) -> bool:
        value = self.get(name, default)
        if isinstance(value, str):
            return value.strip().lower() in ("1", "true", "yes", "on")
        return bool(value)

    def getint(self, name: str, default: int = 0) -> int:
        return int(self.get(name, default))

    def getfloat(self, name: str, default: float = 0.0) -> float:
        return float(self.get(name, default))

    def getlist(self, name: str, default: list[Any] | None = None) -> list[Any]:
        value = self.get(name, default or [])
        return [part.strip() for part in value.split(",")] if isinstance(value, str) else list(value)

    def getdict(self, name: str, default: dict[str, Any] | None = None) -> dict[str, Any]:
        return dict(self.get(name, default or {}))

    def copy_to_dict(self) -> dict[str, Any]:
        return dict(self._values)


@dataclass
class PipelineCrawler:
    """The ``crawler`` a pipeline's ``from_crawler`` receives: ``settings`` and ``spider``
    only (Scrapy's also has ``stats``, ``signals`` and ``engine``, which have no counterpart
    in a worker process; see the README's Item pipelines)."""

    settings: PipelineSettings
    spider: Any
