"""Exceptions raised by crawlcluster, each naming the URL, project or setting involved.

    CrawlClusterError
     +-- ConfigurationError      a setting or a spider path that cannot work
     |    +-- SpiderNotAllowed   a spider outside CRAWLCLUSTER_SPIDER_PACKAGES
     +-- ProjectNotFound         a project name the database does not know
     +-- InvalidURL              a URL that cannot be crawled (scheme, host, syntax)
     +-- FetchError              a fetch that produced no usable response; ``kind`` says why
     |    +-- BodyTooLarge       body (after decompression) above max_body_bytes
     +-- NotHTML                 an HTML helper called on a non-HTML response

Workers turn every one of them into a row's status and error text; none crashes a worker.
"""

from __future__ import annotations


class CrawlClusterError(Exception):
    """Base of every crawlcluster error."""


class ConfigurationError(CrawlClusterError, ValueError):
    """A setting, spider path or option that cannot work as given."""


class SpiderNotAllowed(ConfigurationError):
    """A spider path whose module is outside ``CRAWLCLUSTER_SPIDER_PACKAGES``: workers import
    only spiders of known packages, so a database row cannot make them import any module."""


class ProjectNotFound(CrawlClusterError):
    def __init__(self, project: str) -> None:
        super().__init__(f"no project named {project!r}; `crawlcluster status` lists the known projects")
        self.project = project


class InvalidURL(CrawlClusterError):
    def __init__(self, url: str, reason: str) -> None:
        shown = url if len(url) <= 200 else f"{url[:200]}... ({len(url):,} characters)"
        super().__init__(f"invalid URL {shown!r}: {reason}")
        self.url = url
        self.reason = reason


class FetchError(CrawlClusterError):
    """A fetch that gave no usable response. ``kind`` is a short machine-readable cause
    (timeout, connect, redirect_loop, too_many_redirects, body_too_large, http, invalid_url,
    decode, protocol) and the message is the text stored on the row."""

    def __init__(self, url: str, kind: str, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.kind = kind
        self.status_code = status_code
        self.retry_after_seconds: float | None = None


class BodyTooLarge(FetchError):
    def __init__(self, url: str, limit: int, compressed: bool = False) -> None:
        where = "after decompression " if compressed else ""
        super().__init__(
            url, "body_too_large",
            f"body of {url} exceeds max_body_bytes={limit} "
            f"{where}(raise CRAWLCLUSTER_MAX_BODY_BYTES to keep it)")
        self.limit = limit


class NotHTML(CrawlClusterError):
    def __init__(self, url: str, content_type: str) -> None:
        super().__init__(
            f"{url} is {content_type or 'of unknown type'}, not HTML: use response.body or response.text")
        self.url = url
        self.content_type = content_type

