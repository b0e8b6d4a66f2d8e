"""Helpers for a project's own tests: run a spider callback on a saved page, with the code
``crawlcluster parse`` runs (:mod:`workers.trial`), nothing fetched, nothing stored.

A test keeps a page as the site served it (``tests/pages/product.html``, saved with
``crawlcluster parse URL --json`` or the browser's "save as") and asserts on what the callback
makes of it::

    from crawlcluster.testing import run_callback
    from shop.spiders.catalogue import CatalogueSpider

    def test_a_product_page_gives_its_price():
        result = run_callback(CatalogueSpider(), "tests/pages/product.html", "https://shop.example/p/1",
                              callback="parse_product")
        assert result.ok, result.traceback
        assert result.items == [{"name": "Tea", "price": 2.5}]

A saved page keeps the test fast and its answer fixed: the site may change, the test does
not, and it runs with no network, database or broker. Importing this module builds no
Celery app.
"""

from __future__ import annotations

import mimetypes
import os
from pathlib import Path
from typing import Any

from crawlcluster.spider import Spider
from crawlcluster.stages import trial_engine

__all__ = ["TrialResult", "run_callback"]  # noqa: F822 - TrialResult comes by name: __getattr__


def __getattr__(name: str) -> Any:
    """``TrialResult`` (what :func:`run_callback` returns) from the trial engine, by name."""
    if name == "TrialResult":
        return trial_engine().TrialResult
    raise AttributeError(name)

# what a saved file's extension says it was served as, where mimetypes says nothing useful
_TEXT_TYPES = {".html": "text/html", ".htm": "text/html", ".json": "application/json", ".xml": "text/xml",
               ".txt": "text/plain", ".csv": "text/csv"}


def content_type_of(path: Path) -> str:
    """The Content-Type a saved page is served as: its extension's (``.html`` is
    ``text/html; charset=utf-8``), else ``application/octet-stream``."""
    suffix = path.suffix.lower()
    kind = _TEXT_TYPES.get(suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"{kind}; charset=utf-8" if kind.startswith("text/") or kind.endswith("json") else kind


def run_callback(spider: Spider, page: str | os.PathLike[str] | bytes, url: str, *,
                 callback: str | None = None, data: Any = None, status: int = 200,
                 headers: dict[str, str] | None = None) -> Any:
    """Run ``spider``'s ``callback`` (default ``parse``) on ``page`` as if ``url`` had answered it.

    ``page`` is a file path (its extension gives the Content-Type unless ``headers`` name one)
    or the body's bytes. The result is what ``crawlcluster parse`` prints: ``items`` (plain
    dicts, after the same conversion a crawl does), ``requests`` (dicts with ``url``,
    ``callback``, ``data`` and ``followed``: whether a crawl would add it, or drop it as
    off-site or invalid), ``logs`` (what the callback logged), and ``error`` with
    ``traceback`` when it raised (``ok`` is False then). Item pipelines do not run here, as
    they do not in ``crawlcluster parse``; call a pipeline's ``process_item`` in its own test.
    """
    if isinstance(page, bytes):
        body, content_type = page, "text/html; charset=utf-8"
    else:
        path = Path(page)
        body, content_type = path.read_bytes(), content_type_of(path)
    served = {"content-type": content_type, **{key.lower(): value for key, value in (headers or {}).items()}}
    return trial_engine().try_page(spider, url, body, status=status, headers=served, callback=callback,
                                   data=data)
