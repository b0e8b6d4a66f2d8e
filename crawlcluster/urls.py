"""URL normalisation and stable task ids: two spellings of one URL are one row.

Normalisation is w3lib's ``canonicalize_url`` (sorted query, no fragment, lower-case
scheme and host, percent-encoding made uniform) plus dropping the scheme's default port,
which w3lib keeps.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from urllib.parse import urljoin, urlsplit, urlunsplit

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
