"""The public HTTP API: the ``Request`` a spider yields and the ``Response`` its callbacks receive.

Both cross every stage: a ``Request`` becomes a frontier row (its fetch options stored
with it), and a fetched or rendered page reaches the spider's callback as a ``Response``.
``Response`` is forgiving, as Scrapy's text response is: ``text`` is decoded once, trying
the BOM, the Content-Type header and the body's ``<meta>`` charset before guessing; the
HTML tree is built only when a callback asks for it, and never for a non-HTML body.
Nothing here imports Celery or touches the database, so a spider module stays light.
"""

from __future__ import annotations

import json as jsonlib
import re
from dataclasses import InitVar, dataclass
from typing import TYPE_CHECKING, Any, Callable, Generic, TypeVar
from urllib.parse import urljoin

from selectolax.lexbor import LexborHTMLParser, LexborNode
from w3lib.encoding import html_to_unicode

from crawlcluster import settings
from crawlcluster.errors import ConfigurationError, InvalidURL, NotHTML
from crawlcluster.html_depth import cap_nesting
from crawlcluster.rendering import RenderOptions, render_mode
from crawlcluster.urls import normalize_url

_Value = TypeVar("_Value")


class cached_property(Generic[_Value]):  # noqa: N801 - used as functools' is
    """``functools.cached_property`` without its lock: on Python 3.11 that lock is one per
    property for every instance, so the parse threads of a worker (12 in the embedded crawl)
    waited on each other's HTML parsing. A Response belongs to one thread; computing a value
    twice in a race would only cost time."""

    def __init__(self, func: Callable[[Any], _Value]) -> None:
        self.func = func
        self.name = func.__name__
        self.__doc__ = func.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance: Any, owner: type | None = None) -> _Value:
        if instance is None:
            return self  # type: ignore[return-value]
        value = self.func(instance)
        instance.__dict__[self.name] = value
        return value


if TYPE_CHECKING:
    from parsel import Selector, SelectorList

__all__ = ["Request", "Response"]


@dataclass
class Request:
    """A URL to crawl, and how.

    ``callback`` is the name of a spider method (or the method itself); ``data`` is JSON
    that reaches the callback as ``response.data``. ``priority`` is higher-first. The
    fetch options (method, headers, cookies, body, timeout) are stored with the row, so
    keep them small: they travel with every dispatch of the URL.

    ``render`` picks who loads the page: False fetches it with httpx (cheap: thousands of
    pages per second per node), True renders it in headless Chromium on a render worker
    (a browser page each: a few pages per second per process, for pages whose content
    JavaScript builds), and ``"auto"`` fetches first and renders only when the spider's
    :meth:`Spider.needs_render` says the page needs it. ``render_options`` (a
    :class:`~crawlcluster.rendering.RenderOptions` or its dict) says how to render. Left
    unset (None), both take the spider's ``render`` and ``render_options``.

    ``meta`` is Scrapy's name for ``data`` and is taken as ``data`` (giving both is refused
    when the Request is made): what a callback gets as ``response.meta`` or ``response.data``.
    """

    url: str
    callback: str | Callable | None = None
    method: str = "GET"
    headers: dict[str, str] | None = None
    cookies: dict[str, str] | None = None
    body: str | None = None
    timeout: float | None = None
    priority: int = 0
    data: Any = None
    render: bool | str | None = None
    render_options: RenderOptions | dict[str, Any] | None = None
    # scheduling (see crawlcluster.scheduling): None takes the callback's @config, the
    # spider's attribute, the project's setting, then the cluster default
    retries: int | None = None
    retry_delays: list[float] | None = None
    retry_policy: str | None = None  # "quick" or "recurring" (crawlcluster.scheduling.RETRY_POLICIES)
    age: int | None = None
    itag: str | None = None
    auto_recrawl: bool | None = None
    force_update: bool = False
    exetime: float | None = None
    cancel: bool = False
    meta: InitVar[Any] = None

    def __post_init__(self, meta: Any = None) -> None:
        if meta is not None:
            if self.data is not None and self.data != meta:
                raise ConfigurationError(
                    f"Request({self.url!r}) got both meta= and data=; they are one thing here: "
                    "pass data= only")
            self.data = meta
        if self.render is not None:
            self.render = render_mode(self.render, self.url)
        self.render_options = RenderOptions.coerce(self.render_options)

    @classmethod
    def of_row(cls, url: str, callback: str, data: Any, fetch: dict[str, Any] | None) -> "Request":
        """The Request a frontier row holds (its URL, callback, data and fetch options): what
        ``response.request`` is in a callback."""
        fetch = fetch or {}
        return cls(url, callback=callback, data=data, method=fetch.get("method", "GET"),
                   headers=fetch.get("headers"), cookies=fetch.get("cookies"), body=fetch.get("body"),
                   timeout=fetch.get("timeout"), render=fetch.get("render"))

    def callback_name(self, default: str = "parse") -> str:
        if self.callback is None:
            return default
        if isinstance(self.callback, str):
            return self.callback
        name = getattr(self.callback, "__name__", None)
        if not name:
            raise ConfigurationError(
                f"callback {self.callback!r} of {self.url} must be a spider method or its name")
        return name

    def fetch_options(self) -> dict[str, Any] | None:
        """The non-default fetch options, or None for a plain GET (most rows)."""
        options: dict[str, Any] = {}
        if self.method.upper() != "GET":
            options["method"] = self.method.upper()
        for key in ("headers", "cookies", "body", "timeout"):
            value = getattr(self, key)
            if value:
                options[key] = value
        if self.render:
            options["render"] = self.render
            coerced = RenderOptions.coerce(self.render_options)  # also a dict assigned after construction
            render_options = coerced.to_dict() if coerced is not None else {}
            if render_options:
                options["render_options"] = render_options
        return options or None


HTML_TYPES = ("text/html", "application/xhtml+xml")
XML_TYPES = ("text/xml", "application/xml", "application/rss+xml", "application/atom+xml")
# selectors only parsel understands: Scrapy's ::text and ::attr(name) pseudo-elements
PSEUDO_ELEMENT = re.compile(r"::(text|attr\()")


class Nodes(list):
    """selectolax nodes, as ``response.css()`` returns them, with Scrapy's ``get()`` and
    ``getall()`` (the outer HTML of the first node, of every node)."""

    def get(self, default: str | None = None) -> str | None:
        return self[0].html if self else default

    def getall(self) -> list[str]:
        return [node.html for node in self]
# an absolute path that urljoin would put after the base's scheme and host unchanged: no
# "//host", no dot segment, no whitespace or control character, no empty query or fragment
# at its end (urljoin drops those)
_PLAIN_ABSOLUTE_PATH = re.compile(r"/(?![/.])(?![^?#]*/\.)[^\s\\]*(?<![?#])\Z").match


def _origin(url: str) -> str | None:
    """``scheme://netloc`` of an absolute http(s) URL, or None."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        return None
    netloc = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    return f"{scheme}://{netloc}" if netloc else None


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
                 depth: int = 0, js_result: Any = None, rendered: bool = False,
                 max_nesting_depth: int | None = None, max_links: int | None = None,
                 request: Request | None = None) -> None:
        self._request = request
        self.url = url
        self.status = status
        self.headers = headers
        self.body = body
        self.data = data
        self.depth = depth
        self.js_result = js_result
        self.rendered = rendered
        # past this many open elements, tags become siblings before the parser sees them
        # (crawlcluster.html_depth); None: the max_html_depth setting
        self.max_nesting_depth = max_nesting_depth
        self.nesting_capped = 0  # start tags made siblings at that depth, once the tree is built
        # links() and follow_all() stop after this many (None: the max_links_per_page setting)
        self.max_links = max_links
        self.links_over_limit = 0  # anchors they skipped past it

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
            self.headers.get("content-type"), self.body, default_encoding="utf-8",
            auto_detect_fun=_detect_encoding
        )
        return encoding, text

    @property
    def encoding(self) -> str:
        return self._decoded[0]

    @property
    def text(self) -> str:
        return self._decoded[1]

    @cached_property
    def _parsed_text(self) -> str:
        """The text the HTML parser gets: nesting capped, so a hostile page parses in linear time."""
        limit = self.max_nesting_depth
        if limit is None:
            limit = settings.current().max_html_depth
        text, self.nesting_capped = cap_nesting(self.text, limit)
        return text

    @cached_property
    def tree(self) -> LexborHTMLParser:
        if not self.is_html:
            raise NotHTML(self.url, self.content_type)
        return LexborHTMLParser(self._parsed_text)

    @cached_property
    def base_url(self) -> str:
        base = self.tree.css_first("base[href]")
        href = base.attributes.get("href") if base is not None else None
        return urljoin(self.url, href.strip()) if href else self.url

    @property
    def request(self) -> Request:
        """The Request that produced this page (url, callback, data, headers, ...)."""
        if self._request is None:
            self._request = Request(self.url, data=self.data)
        return self._request

    @property
    def meta(self) -> Any:
        """Scrapy's name for :attr:`data`: what the request passed along (a dict unless the
        request gave something else; changes to it reach the requests made from it only
        when passed on, as ``data=response.meta``)."""
        if self.data is None:
            self.data = {}
        return self.data

    def json(self) -> Any:
        """The body parsed as JSON (ValueError when it is not)."""
        return jsonlib.loads(self.text)

    @cached_property
    def selector(self) -> "Selector":
        """A parsel ``Selector`` over the page (Scrapy's selectors: ``css()`` with ``::text``
        and ``::attr(name)``, ``xpath()``, ``re()``, ``get()``/``getall()``), built on first
        use; HTML and XML only."""
        from parsel import Selector

        if self.is_html:
            kind = "html"
        elif self.content_type in XML_TYPES or self.content_type.endswith("+xml"):
            kind = "xml"
        else:
            raise NotHTML(self.url, self.content_type)
        return Selector(text=self.text, type=kind, base_url=self.url)

    def xpath(self, query: str, **namespaces: Any) -> "SelectorList[Selector]":
        """Scrapy's ``response.xpath()``: a parsel SelectorList (``.get()``, ``.getall()``)."""
        return self.selector.xpath(query, **namespaces)

    def css(self, selector: str) -> Any:
        """The page's elements that match ``selector``.

        A plain CSS selector is matched by selectolax (fast) and gives its nodes
        (``node.text()``, ``node.attributes``, ``node.css_first()``), in a list that also has
        Scrapy's ``get()``/``getall()``. A selector with Scrapy's ``::text`` or
        ``::attr(name)`` goes to parsel and gives a SelectorList, so
        ``response.css("h1::text").get()`` works as in Scrapy. For Scrapy-style nested
        selection (``quote.css("span::text")`` on an element) start from
        ``response.selector.css(...)`` or ``response.xpath(...)``."""
        if PSEUDO_ELEMENT.search(selector):
            return self.selector.css(selector)
        return Nodes(self.tree.css(selector))

    def css_first(self, selector: str, default: Any = None) -> LexborNode | Any:
        return self.tree.css_first(selector, default=default)

    def visible_text(self) -> str:
        """The body's text without scripts, styles, ``<noscript>`` and templates,
        whitespace collapsed: what a reader sees before any script runs."""
        tree = LexborHTMLParser(self._parsed_text)  # a copy: stripping must not change self.tree
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

    def _max_links(self) -> int:
        if self.max_links is None:
            self.max_links = settings.current().max_links_per_page
        return self.max_links

    @cached_property
    def _links(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        base = self.base_url
        origin = _origin(base)
        limit = self._max_links()
        nodes = self.tree.css("a[href]")
        for index, node in enumerate(nodes):
            if len(seen) >= limit:  # the rest would be dropped anyway: not even normalised
                self.links_over_limit += len(nodes) - index
                break
            href = (node.attributes.get("href") or "").strip()
            if not href or href.startswith("#") or href.lower().startswith(SKIPPED_SCHEMES):
                continue
            try:
                if origin and _PLAIN_ABSOLUTE_PATH(href):
                    # "/path?query" (most of a site's links): joined by hand, as urljoin would
                    url = normalize_url(origin + href)
                else:
                    url = normalize_url(href, base)
            except InvalidURL:
                continue
            seen.setdefault(url, None)
        return tuple(seen)

    def links(self) -> list[str]:
        """Absolute, normalised http(s) URLs of the page's ``<a href>`` links, each once, in
        page order; anchors without href, fragments-only and non-web schemes are skipped.
        At most ``max_links`` (the max_links_per_page setting): the anchors past it are only
        counted (``links_over_limit``), so a page of 100,000 links costs no more than that."""
        return list(self._links)

    def follow(self, url: str | LexborNode, callback: Any = None, **kwargs: Any) -> Request:
        """A request for ``url`` (a string or an ``<a>`` node) relative to this page."""
        if isinstance(url, LexborNode):
            href = url.attributes.get("href")
            if not href:
                raise InvalidURL(str(url.html)[:80], "the node has no href")
            url = href
        return Request(self.urljoin(url), callback=callback, **kwargs)

    def follow_all(self, css: str = "a[href]", callback: Any = None, **kwargs: Any) -> list[Request]:
        """Requests for every ``href`` matched by ``css``; anchors without href are skipped.
        At most ``max_links``, as :meth:`links`; the rest are counted in ``links_over_limit``."""
        requests: list[Request] = []
        limit = self._max_links()
        nodes = self.css(css)
        for index, node in enumerate(nodes):
            if len(requests) >= limit:
                self.links_over_limit += len(nodes) - index
                break
            href = (node.attributes.get("href") or "").strip()
            if href and not href.startswith("#") and not href.lower().startswith(SKIPPED_SCHEMES):
                requests.append(Request(self.urljoin(href), callback=callback, **kwargs))
        return requests
