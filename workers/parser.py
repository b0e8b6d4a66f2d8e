"""The parse engine: a forgiving selectolax ``Response`` and the runner of spider callbacks.

``Response.text`` is decoded once, trying the BOM, the Content-Type header and the
body's ``<meta>`` charset before guessing. The HTML tree is built only when a callback
asks for it, and never for a non-HTML body. :func:`run_callback` turns whatever a
callback yields into items and normalised, deduplicated, filtered new requests.
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Iterable
from urllib.parse import urljoin

from selectolax.lexbor import LexborHTMLParser, LexborNode
from w3lib.encoding import html_to_unicode

from crawlcluster.errors import InvalidURL, NotHTML
from crawlcluster.spider import Request, Spider
from crawlcluster.urls import normalize_url

logger = logging.getLogger(__name__)

HTML_TYPES = ("text/html", "application/xhtml+xml")
SKIPPED_SCHEMES = ("mailto:", "javascript:", "tel:", "data:", "ftp:", "file:", "about:", "sms:")


def _detect_encoding(body: bytes) -> str | None:
    try:
        from charset_normalizer import from_bytes
    except ImportError:  # pragma: no cover - a declared dependency
        return None
    best = from_bytes(body[:65536]).best()
    return best.encoding if best is not None else None


class Response:
    """A fetched page as a callback sees it.

    ``url`` is the page's URL, ``status`` its HTTP status, ``body`` the raw bytes, ``text``
    the decoded text, ``data`` what the request passed along, ``depth`` its link depth.
    HTML helpers (``css``, ``css_first``, ``title``, ``links``) raise :class:`NotHTML`
    on other content types, naming the URL.

    A page rendered in a browser (``rendered`` is True) has the HTML as the browser left
    it, ``url`` is where the browser ended (after client-side redirects; the row keeps
    the requested URL), and ``js_result`` is what the request's ``js_script`` returned.
    """

    def __init__(self, url: str, status: int, headers: dict[str, str], body: bytes, *, data: Any = None,
                 depth: int = 0, js_result: Any = None, rendered: bool = False) -> None:
        self.url = url
        self.status = status
        self.headers = headers
        self.body = body
        self.data = data
        self.depth = depth
        self.js_result = js_result
        self.rendered = rendered

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.url}>"

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    @property
    def is_html(self) -> bool:
        ctype = self.content_type
        if ctype in HTML_TYPES:
            return True
        if ctype:
            return False
        # no Content-Type: look at the first bytes as browsers do
        head = self.body[:512].lstrip().lower()
        return head.startswith((b"<!doctype html", b"<html"))

    @cached_property
    def _decoded(self) -> tuple[str, str]:
        encoding, text = html_to_unicode(
            self.headers.get("content-type"), self.body, default_encoding="utf-8", auto_detect_fun=_detect_encoding
        )
        return encoding, text

    @property
    def encoding(self) -> str:
        return self._decoded[0]

    @property
    def text(self) -> str:
        return self._decoded[1]

    @cached_property
    def tree(self) -> LexborHTMLParser:
        if not self.is_html:
            raise NotHTML(self.url, self.content_type)
        return LexborHTMLParser(self.text)

    @cached_property
    def base_url(self) -> str:
        base = self.tree.css_first("base[href]")
        href = base.attributes.get("href") if base is not None else None
        return urljoin(self.url, href.strip()) if href else self.url

    def css(self, selector: str) -> list[LexborNode]:
        return self.tree.css(selector)

    def css_first(self, selector: str, default: Any = None) -> LexborNode | Any:
        return self.tree.css_first(selector, default=default)

    def visible_text(self) -> str:
        """The body's text without scripts, styles, ``<noscript>`` and templates,
        whitespace collapsed: what a reader sees before any script runs."""
        tree = LexborHTMLParser(self.text)  # a copy: stripping must not change self.tree
        tree.strip_tags(["script", "style", "noscript", "template"])
        body = tree.body
        return " ".join((body.text(separator=" ") if body is not None else "").split())

    @property
    def title(self) -> str | None:
        node = self.tree.css_first("title")
        return node.text(strip=True) if node is not None else None

    def urljoin(self, url: str) -> str:
        """``url`` made absolute against the page (its ``<base href>`` for HTML)."""
        return urljoin(self.base_url if self.is_html else self.url, url)

    def links(self) -> list[str]:
        """Absolute, normalised http(s) URLs of the page's ``<a href>`` links, each once, in
        page order; anchors without href, fragments-only and non-web schemes are skipped."""
        seen: dict[str, None] = {}
        base = self.base_url
        for node in self.tree.css("a[href]"):
            href = (node.attributes.get("href") or "").strip()
            if not href or href.startswith("#") or href.lower().startswith(SKIPPED_SCHEMES):
                continue
            try:
                seen.setdefault(normalize_url(href, base), None)
            except InvalidURL:
                continue
        return list(seen)

    def follow(self, url: str | LexborNode, callback: Any = None, **kwargs: Any) -> Request:
        """A request for ``url`` (a string or an ``<a>`` node) relative to this page."""
        if isinstance(url, LexborNode):
            href = url.attributes.get("href")
            if not href:
                raise InvalidURL(str(url.html)[:80], "the node has no href")
            url = href
        return Request(self.urljoin(url), callback=callback, **kwargs)

    def follow_all(self, css: str = "a[href]", callback: Any = None, **kwargs: Any) -> list[Request]:
        """Requests for every ``href`` matched by ``css``; anchors without href are skipped."""
        requests = []
        for node in self.css(css):
            href = (node.attributes.get("href") or "").strip()
            if href and not href.startswith("#") and not href.lower().startswith(SKIPPED_SCHEMES):
                requests.append(Request(self.urljoin(href), callback=callback, **kwargs))
        return requests


@dataclass
class CallbackOutcome:
    """What one callback run produced for one page."""

    items: list[dict[str, Any]] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    error: str | None = None
    # the exception itself, so the parse stage can log its traceback (rate-limited there)
    exception: BaseException | None = field(default=None, repr=False)


def run_callback(spider: Spider, callback_name: str, response: Response) -> CallbackOutcome:
    """Run a spider callback to the end and sort what it yields. An exception becomes the
    outcome's ``error`` (with the line that raised) and drops that page's partial output."""
    outcome = CallbackOutcome()
    try:
        produced = spider.callback(callback_name)(response)
        if produced is None:
            produced = ()
        elif isinstance(produced, (dict, Request, str)):
            produced = (produced,)  # a callback may return one item instead of yielding it
        for value in produced:
            if isinstance(value, Request):
                outcome.requests.append(spider.with_defaults(value))
            elif isinstance(value, dict):
                outcome.items.append(value)
            elif isinstance(value, str):
                outcome.requests.append(spider.with_defaults(Request(response.urljoin(value))))
            elif value is not None:
                raise TypeError(f"callback {callback_name} yielded {type(value).__name__}; yield dicts (items) or Requests")
    except Exception as exc:  # noqa: BLE001 - a spider bug must end in a row state, not a crash
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        outcome = CallbackOutcome(error=f"{type(spider).__name__}.{callback_name} raised {type(exc).__name__}: {exc} "
                                        f"({frame.filename}:{frame.lineno})", exception=exc)
    return outcome


def filter_requests(spider: Spider, requests: Iterable[Request], depth: int, max_depth: int | None) -> tuple[list[tuple[str, Request]], int]:
    """The requests to add to the frontier as (normalised URL, request), and how many were dropped
    (invalid, off-site, or deeper than ``max_depth``)."""
    kept: list[tuple[str, Request]] = []
    dropped = 0
    if max_depth is not None and depth + 1 > max_depth:
        return kept, sum(1 for _ in requests)
    for request in requests:
        try:
            url = normalize_url(request.url)
        except InvalidURL:
            dropped += 1
            continue
        if not spider.allows(url):
            dropped += 1
            continue
        kept.append((url, request))
    return kept, dropped
