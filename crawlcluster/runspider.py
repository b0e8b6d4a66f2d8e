"""Spiders named on the command line: ``pkg.mod:Spider`` from the current directory, and
``crawlcluster crawl path/to/spider.py``, which runs the one Spider subclass in that file as
``scrapy runspider`` does.

A file's directory becomes importable and the file is imported as a module named after it
(``spiders/books.py`` -> ``books``), so the embedded crawl's parse stage, in the same
process, loads it by the ordinary import path ``books:BooksSpider`` and the spider allow-list
admits that module for this command only, as it admits a spider named by import path.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

from crawlcluster.errors import ConfigurationError

__all__ = ["import_current_directory", "is_spider_file", "spider_in_file"]


def import_current_directory() -> None:
    """Make the current directory importable, as ``scrapy`` does for ``pkg.mod:Spider``."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def is_spider_file(target: str) -> bool:
    """Whether a command-line target names a Python file rather than a URL or import path."""
    return target.endswith(".py") and "://" not in target


def spider_in_file(path: str) -> str:
    """The import path (``module:Class``) of the one Spider subclass defined in the file at
    ``path``; a ConfigurationError when there is no such file, none, or several (naming them)."""
    from crawlcluster.spider import Spider

    file = Path(path).resolve()
    if not file.is_file():
        raise ConfigurationError(f"no spider file {path!r}")
    module_name = file.stem
    if not module_name.isidentifier():
        raise ConfigurationError(f"spider file {path!r}: {module_name!r} cannot be a module name; "
                                 "rename the file (letters, digits and _)")
    directory = str(file.parent)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    known = sys.modules.get(module_name)
    if known is not None and Path(getattr(known, "__file__", "") or "").resolve() != file:
        raise ConfigurationError(f"spider file {path!r}: a module named {module_name!r} is already "
                                 f"imported from {getattr(known, '__file__', None)}; rename the file")
    try:
        module = importlib.import_module(module_name)
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - a file that raises or exits at import
        raise ConfigurationError(
            f"spider file {path!r} raised at import: {type(exc).__name__}: {exc}") from None
    spiders = [obj for obj in vars(module).values()
               if isinstance(obj, type) and issubclass(obj, Spider) and obj.__module__ == module_name]
    if not spiders:
        raise ConfigurationError(f"spider file {path!r} defines no crawlcluster.Spider subclass")
    if len(spiders) > 1:
        names = ", ".join(sorted(s.__qualname__ for s in spiders))
        raise ConfigurationError(f"spider file {path!r} defines several spiders ({names}); name one as "
                                 f"{module_name}:{spiders[0].__qualname__} (from {directory})")
    return f"{module_name}:{spiders[0].__qualname__}"
