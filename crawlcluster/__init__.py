"""crawlcluster: a distributed web-crawl cluster on Celery.

The public API is listed in ``__all__``. ``celery -A crawlcluster ...`` finds the Celery
application as ``crawlcluster.app``.
"""

from crawlcluster.app import app
from crawlcluster.client import Crawl, CrawlTimeout, list_projects, render_stats, scheduler_health, submit
from crawlcluster.errors import (
    BodyTooLarge,
    ConfigurationError,
    CrawlClusterError,
    FetchError,
    InvalidURL,
    NotHTML,
    NotYetAvailable,
    ProjectNotFound,
)
from crawlcluster.rendering import RenderOptions
from crawlcluster.spider import LinkSpider, Request, Spider

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
    "CrawlClusterError",
    "ConfigurationError",
    "ProjectNotFound",
    "InvalidURL",
    "FetchError",
    "BodyTooLarge",
    "NotHTML",
    "NotYetAvailable",
]
