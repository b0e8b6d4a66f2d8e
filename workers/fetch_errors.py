"""How the fetch engine names what went wrong: httpx's exceptions as a FetchError of a kind,
which kinds (and HTTP statuses) are worth another try, and the server's Retry-After.

The kind is what a row's ``error_kind`` shows and what the retry policy goes by: a name that
does not resolve is ``dns``, apart from other ``connect`` errors, so ``crawlcluster
failures`` tells a dead host from a refused port. A connection the address guard refused is
``address``: final at once, since the same name resolves to the same private address on
every try, and its text names the address and why.
"""

from __future__ import annotations

import logging
import socket
import time
from email.utils import parsedate_to_datetime
from typing import TypeVar

import httpx

from crawlcluster.errors import FetchError
from crawlcluster.netguard import AddressRefused

logger = logging.getLogger(__name__)

E = TypeVar("E", bound=BaseException)

# failures worth trying again later; any other failure is final
# (dns too: a resolver may fail for a moment; the retry policy bounds how long it is tried)
RETRYABLE_KINDS = frozenset({"timeout", "connect", "dns", "network", "protocol"})
RETRYABLE_STATUS = frozenset({408, 429})


def is_retryable(kind: str, status_code: int | None) -> bool:
    """Connection and name-resolution errors, timeouts, 5xx, 408 and 429 are retried
    (as often as the row's retry policy says); other 4xx and bad content are final."""
    if kind in RETRYABLE_KINDS:
        return True
    return (kind == "http" and status_code is not None
            and (status_code >= 500 or status_code in RETRYABLE_STATUS))


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def describe_http_error(url: str, exc: Exception) -> FetchError:
    """What went wrong with a fetch, as a FetchError of a kind (timeout, invalid_url, dns, connect,
    protocol, network, address; internal for what httpx does not raise) and a sentence naming the URL."""
    guarded = _cause(exc, AddressRefused)
    if guarded is not None:
        return FetchError(url, "address", f"refused {url}: {guarded}")
    if isinstance(exc, httpx.TimeoutException):
        phase = {
            httpx.ConnectTimeout: "connecting",
            httpx.ReadTimeout: "reading",
            httpx.WriteTimeout: "sending",
            httpx.PoolTimeout: "waiting for a connection",
        }.get(type(exc), "fetching")
        return FetchError(url, "timeout", f"timeout while {phase} {url}")
    if isinstance(exc, (httpx.UnsupportedProtocol, httpx.InvalidURL)):
        return FetchError(url, "invalid_url", f"invalid URL {url}: {exc}")
    if isinstance(exc, httpx.ConnectError):
        resolving = _cause(exc, socket.gaierror)
        if resolving is not None:
            host = httpx.URL(url).host
            reason = resolving.strerror or resolving
            return FetchError(url, "dns", f"cannot resolve {host} ({reason}) for {url}")
        refused = _cause(exc, ConnectionRefusedError)
        if refused is not None:
            netloc = httpx.URL(url).netloc.decode()
            return FetchError(url, "connect", f"connection refused by {netloc} for {url}")
        return FetchError(url, "connect", f"cannot connect to {url}: {exc or type(exc).__name__}")
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.LocalProtocolError)):
        return FetchError(url, "protocol", f"broken HTTP from {url}: {exc or type(exc).__name__}")
    if isinstance(exc, httpx.HTTPError):
        return FetchError(url, "network", f"{type(exc).__name__} fetching {url}: {exc}")
    logger.exception("unexpected error fetching %s", url)
    return FetchError(url, "internal", f"unexpected {type(exc).__name__} fetching {url}: {exc}")


def _cause(exc: BaseException, kind: type[E]) -> E | None:
    """The first exception of type ``kind`` among ``exc``'s causes (httpx wraps the socket's)."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 20:  # a cycle of causes is possible, if odd
        if isinstance(current, kind):
            return current
        current = current.__cause__ or current.__context__
        seen += 1
    return None
