"""crawlcluster: a distributed web-crawl cluster on Celery.

The public API is listed in ``__all__``. ``celery -A crawlcluster ...`` finds the Celery
application as ``crawlcluster.app`` (or ``crawlcluster.celery``), built on first access:
importing the package, or a spider module that imports ``crawlcluster.Spider``, builds no
Celery app, reads no broker setting and writes no environment variable.
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING, Any

from crawlcluster.client import Crawl, CrawlTimeout, list_projects, render_stats, scheduler_health
from crawlcluster.errors import (
    BodyTooLarge,
    ConfigurationError,
    CrawlClusterError,
    FetchError,
    InvalidURL,
    NotHTML,
    ProjectNotFound,
)
from crawlcluster.http import Request, Response
from crawlcluster.pipelines import DropItem
from crawlcluster.rendering import RenderOptions
from crawlcluster.spider import LinkSpider, Spider
from crawlcluster.submission import submit

if TYPE_CHECKING:
    from crawlcluster.app import CrawlCelery

    app: CrawlCelery
    celery: CrawlCelery

__version__ = "0.1.0"

__all__ = [
    "app",
    "submit",
    "Crawl",
    "CrawlTimeout",
    "list_projects",
    "scheduler_health",
    "render_stats",
    "RenderOptions",
    "Spider",
    "LinkSpider",
    "Request",
    "Response",
    "CrawlClusterError",
    "ConfigurationError",
    "ProjectNotFound",
    "InvalidURL",
    "FetchError",
    "BodyTooLarge",
    "NotHTML",
    "DropItem",
]


def _celery_app() -> Any:
    from crawlcluster.app import app as celery_app  # builds the app on first import

    return celery_app


class _Package(types.ModuleType):
    """The package module, with ``app`` and ``celery`` as properties that build the Celery
    app on first access.

    A module ``__getattr__`` would not do: importing the submodule ``crawlcluster.app``
    (``from crawlcluster.app import app`` in every task module) makes Python set the
    package's attribute ``app`` to that submodule, after which ``crawlcluster.app`` would
    be a module and ``from crawlcluster import app`` would break. A property ignores that
    assignment, so ``crawlcluster.app`` is always the Celery app, as it was when the
    package built it at import.
    """

    @property
    def app(self) -> Any:
        return _celery_app()

    @app.setter
    def app(self, value: Any) -> None:
        if not isinstance(value, types.ModuleType):  # the import system's own setattr
            raise AttributeError("crawlcluster.app is the Celery app and cannot be replaced")

    @property
    def celery(self) -> Any:
        return _celery_app()


sys.modules[__name__].__class__ = _Package
