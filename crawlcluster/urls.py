"""URL normalisation and stable task ids: two spellings of one URL are one row.

Normalisation is w3lib's ``canonicalize_url`` (sorted query, no fragment, lower-case
scheme and host, percent-encoding made uniform) plus dropping the scheme's default port,
which w3lib keeps.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from urllib.parse import parse_qsl, urljoin, urlsplit, urlunsplit

from w3lib.url import canonicalize_url

from crawlcluster.errors import InvalidURL

DEFAULT_PORTS = {"http": 80, "https": 443}
CRAWLABLE_SCHEMES = ("http", "https")


def normalize_url(url: str, base: str | None = None) -> str:
    """The canonical form of ``url`` (resolved against ``base`` when relative).

    Raises :class:`InvalidURL` for what cannot be crawled: other schemes, no host, bad ports.
    """
    if not isinstance(url, str):
        raise InvalidURL(repr(url), "a URL must be a string")
    raw = url.strip()
    if base:
        raw = urljoin(base, raw)
    return _normalize_absolute(raw)


# pages of one site repeat the same links over and over: canonicalising each once per
# process saves most of the parse stage's URL work
@lru_cache(maxsize=65536)
def _normalize_absolute(raw: str) -> str:
    url = raw
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError as exc:
        raise InvalidURL(url, str(exc)) from None
    scheme = parts.scheme.lower()
    if scheme not in CRAWLABLE_SCHEMES:
        raise InvalidURL(url, f"scheme {parts.scheme or '(none)'!r} is not http or https")
    if not parts.hostname:
        raise InvalidURL(url, "no host")
    try:
        canonical = canonicalize_url(raw, keep_fragments=False)
    except Exception as exc:  # w3lib raises assorted errors on garbage
        raise InvalidURL(url, f"cannot be parsed ({exc})") from None
    parts = urlsplit(canonical)
    if port is not None and DEFAULT_PORTS.get(parts.scheme) == port:
        host = parts.hostname or ""
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@{host}" if userinfo else host
        canonical = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
    return canonical


# RFC 1035 (2.3.4, with RFC 1123's relaxation of the first character): a label is 1 to 63
# octets and a name at most 253 (255 on the wire), counted after IDNA
MAX_HOST_NAME_LENGTH = 253
MAX_LABEL_LENGTH = 63
# how much of an over-long URL an error text shows
SHOWN_URL_CHARACTERS = 200


def short_url(url: str, limit: int = SHOWN_URL_CHARACTERS) -> str:
    """``url`` for an error text or a log line: whole when short, else its first ``limit``
    characters and its length, so a 1 MB URL never ends up in a row or a log."""
    if len(url) <= limit:
        return url
    return f"{url[:limit]}... ({len(url):,} characters)"


def host_problem(url: str) -> str | None:
    """Why the host name of a normalised ``url`` cannot be a DNS name (RFC 1035 lengths:
    labels of 1 to 63 octets, at most 253 in all, after IDNA), or None when it can. IP
    literals pass; the name is never looked up here."""
    return _host_name_problem(url_host(url))


@lru_cache(maxsize=4096)
def _host_name_problem(netloc: str) -> str | None:
    host = urlsplit("//" + netloc).hostname or ""
    if host.startswith("[") or ":" in host or _IPV4.fullmatch(host):
        return None
    name = host[:-1] if host.endswith(".") else host
    if len(name) > MAX_HOST_NAME_LENGTH:
        return f"its host name is {len(name)} characters long (RFC 1035: at most {MAX_HOST_NAME_LENGTH})"
    for label in name.split("."):
        if not label:
            return "its host name has an empty label (RFC 1035: labels of 1 to 63 characters)"
        if len(label) > MAX_LABEL_LENGTH:
            return (f"its host name has a label of {len(label)} characters "
                    f"(RFC 1035: at most {MAX_LABEL_LENGTH})")
    return None


def length_problem(url: str, max_url_length: int) -> str | None:
    """Why ``url`` is too long to crawl (over ``max_url_length`` characters), or None."""
    if len(url) > max_url_length:
        return f"it is {len(url):,} characters long (max_url_length={max_url_length})"
    return None


_IPV4 = re.compile(r"[0-9.]+")


# every link of a page asks for its host, and pages repeat their links: cached like normalize_url
@lru_cache(maxsize=65536)
def url_host(url: str) -> str:
    """The host (and non-default port) of a normalised URL: the unit of politeness."""
    return urlsplit(url).netloc.rpartition("@")[2]


def host_port(url: str) -> str:
    """``host:port`` of a URL, the scheme's default port filled in (``example.com:443``,
    ``[::1]:8000``): how a start URL's host is trusted by the address guard."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError as exc:
        raise InvalidURL(url, str(exc)) from None
    return f"{host}:{port or DEFAULT_PORTS.get(parts.scheme.lower(), 80)}"


def task_id(project: str, url: str, method: str = "GET", body: bytes | str | None = None) -> str:
    """A stable 32-hex-digit id for (project, normalised URL), plus method and body when
    they are not a plain GET, so the same request is the same row on every node."""
    digest = hashlib.sha1()
    digest.update(project.encode("utf-8"))
    digest.update(b"\0")
    digest.update(url.encode("utf-8"))
    if method.upper() != "GET" or body:
        digest.update(b"\0" + method.upper().encode("ascii"))
        if body:
            digest.update(b"\0" + (body.encode("utf-8") if isinstance(body, str) else body))
    return digest.hexdigest()[:32]


# URL shapes: the unit the crawler-trap guard (workers.page_bounds) and render="auto"'s
# learning (crawlcluster.rendering) count in
_NUMBER = re.compile(r"-?\d+")  # d=-3 is d=3's shape: a calendar runs both ways
# an id: a long run of hex, or letters and digits mixed (session ids, hashes, uuids)
_ID = re.compile(r"(?=[0-9a-z_-]*\d)(?=[0-9a-z_-]*[a-z])[0-9a-z_-]{8,}|[0-9a-f]{8,}", re.IGNORECASE)


def _fold(token: str) -> str:
    return _NUMBER.sub("<n>", _ID.sub("<id>", token))


@lru_cache(maxsize=65536)
def url_shape(url: str) -> str:
    """``url`` with numbers and ids folded: the unit the shape-chain rule counts in.

    ``http://h/cal?d=17`` -> ``h/cal?d=<n>``; ``http://h/s/9f8e7d6c5b/list;jsessionid=AB12CD34EF``
    -> ``h/s/<id>/list;jsessionid=<id>``. The query's keys stay, its values are folded."""
    parts = urlsplit(url)
    path = "/".join(_fold(segment) for segment in parts.path.split("/"))
    query = "&".join(f"{key}={_fold(value)}" for key, value in parse_qsl(parts.query, keep_blank_values=True))
    return f"{parts.netloc}{path}" + (f"?{query}" if query else "")
