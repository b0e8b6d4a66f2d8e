"""How the fetch engine names what went wrong: httpx's exceptions as a FetchError of a kind,
which kinds (and HTTP statuses) are worth another try, and the server's Retry-After.

The kind is what a row's ``error_kind`` shows and what the retry policy goes by: a name that
does not resolve is ``dns``, apart from other ``connect`` errors, so ``crawlcluster
failures`` tells a dead host from a refused port. Some failures can never succeed on a
retry and end the row at once: a response that breaks HTTP itself (an illegal status line,
headers over h11's limit, conflicting Content-Length: kind ``protocol``), a TLS handshake
that fails on versions or ciphers (``tls``) and a certificate that does not verify
(``certificate``). A connection that breaks (reset, closed mid-body, closed before any
answer) is ``network`` and is retried. Every message carries the underlying reason, found
by walking the exception's ``__cause__``/``__context__`` chain (httpx wraps httpcore, which
wraps anyio, which wraps the socket's OSError: only the last one says "Connection reset by
peer"). A connection the address
guard refused is ``address``: final at once, since the same name resolves to the same private
address on every try, and its text names the address and why.
"""

from __future__ import annotations

import logging
import math
import socket
import ssl
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
RETRYABLE_KINDS = frozenset({"timeout", "connect", "dns", "network"})
RETRYABLE_STATUS = frozenset({408, 429})
# failures that say the server can never answer this URL as asked: broken HTTP, a TLS
# handshake or a certificate that fails (a robots.txt failing so makes its host unreachable at once)
FINAL_KINDS = frozenset({"protocol", "tls", "certificate"})
# h11's words for a connection that closed early: the server went away, which a retry may
# survive; every other protocol error is a server that does not speak HTTP/1.1 correctly
CLOSED_EARLY = ("server disconnected", "peer closed connection")
# OpenSSL reasons of a handshake that fails the same way every time: the two sides share no
# protocol version or cipher, or the port does not speak TLS at all
FINAL_TLS_REASONS = ("PROTOCOL_VERSION", "UNSUPPORTED_PROTOCOL", "WRONG_VERSION_NUMBER",
                     "NO_PROTOCOLS_AVAILABLE", "HANDSHAKE_FAILURE", "NO_SHARED_CIPHER",
                     "NO_CIPHERS_AVAILABLE", "INSUFFICIENT_SECURITY", "UNSAFE_LEGACY_RENEGOTIATION",
                     "BAD_CERTIFICATE", "CERTIFICATE_UNKNOWN", "UNKNOWN_CA")
# a Retry-After longer than this is read as this (about 31 years): the retry policy's cap
# (retry_after_max_seconds) applies later; this only keeps absurd values finite and readable
RETRY_AFTER_CEILING = 10**9
# longest reason quoted from an exception (a status line or header may be as long as h11 allows)
REASON_CHARS = 300


def is_retryable(kind: str, status_code: int | None) -> bool:
    """Connection and name-resolution errors, timeouts, 5xx, 408 and 429 are retried
    (as often as the row's retry policy says); other 4xx, bad content, broken HTTP and
    TLS or certificate failures are final."""
    if kind in RETRYABLE_KINDS:
        return True
    return (kind == "http" and status_code is not None
            and (status_code >= 500 or status_code in RETRYABLE_STATUS))


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), finite and
    never negative: at most :data:`RETRY_AFTER_CEILING` (400 nines read as that, not as
    ``inf``), a date in the past as 0; a negative number or garbage as None (no advice)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        # compared by length first: int() of a few thousand digits is refused by Python
        if len(value.lstrip("0")) > len(str(RETRY_AFTER_CEILING)):
            return float(RETRY_AFTER_CEILING)
        return float(min(int(value), RETRY_AFTER_CEILING))
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    seconds = when - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return min(max(0.0, seconds), float(RETRY_AFTER_CEILING))


def underlying_reason(exc: BaseException) -> str:
    """The most telling text in ``exc``'s chain of causes: an OSError's own words
    ("Connection reset by peer"), else the innermost non-empty message, else the innermost
    exception's class name; quoted at most :data:`REASON_CHARS` characters long."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < 20:  # a cycle of causes is possible, if odd
        chain.append(current)
        current = current.__cause__ or current.__context__
    reason = ""
    for link in reversed(chain):
        if isinstance(link, OSError) and not isinstance(link, ssl.SSLError) and link.strerror:
            reason = link.strerror
            break
        if str(link).strip():
            reason = str(link).strip()
            break
    reason = reason or type(chain[-1]).__name__
    if len(reason) > REASON_CHARS:
        reason = reason[:REASON_CHARS] + f"... [{len(reason) - REASON_CHARS} characters cut]"
    return reason


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
        if (tls := _tls_error(url, exc)) is not None:
            return tls
        return FetchError(url, "connect", f"cannot connect to {url}: {underlying_reason(exc)}")
    if isinstance(exc, httpx.RemoteProtocolError):
        reason = underlying_reason(exc)
        if reason.lower().startswith(CLOSED_EARLY):
            return FetchError(url, "network", f"connection to {url} broke: {reason}")
        if reason == "Receive buffer too long":  # h11's words for headers over its limit
            reason = "response headers too long"
        return FetchError(url, "protocol", f"broken HTTP from {url} ({reason}); not retried, the server "
                          "answers the same way every time")
    if isinstance(exc, httpx.LocalProtocolError):
        return FetchError(url, "protocol", f"request to {url} cannot be sent ({underlying_reason(exc)})")
    if isinstance(exc, httpx.HTTPError):
        if (tls := _tls_error(url, exc)) is not None:
            return tls
        return FetchError(url, "network", f"{type(exc).__name__} fetching {url}: {underlying_reason(exc)}")
    logger.exception("unexpected error fetching %s", url)
    return FetchError(url, "internal", f"unexpected {type(exc).__name__} fetching {url}: {exc}")


def _tls_error(url: str, exc: BaseException) -> FetchError | None:
    """A TLS failure that no retry can mend, as a final FetchError: a certificate that does
    not verify (``certificate``), or a handshake that fails on versions, ciphers or a port
    that does not speak TLS (``tls``). None for other errors (an EOF mid-handshake is retried)."""
    verify = _cause(exc, ssl.SSLCertVerificationError)
    if verify is not None:
        return FetchError(url, "certificate", f"certificate of {url} not trusted: "
                          f"{underlying_reason(verify)}; not retried")
    failed = _cause(exc, ssl.SSLError)
    if failed is not None and any(word in (failed.reason or str(failed)) for word in FINAL_TLS_REASONS):
        return FetchError(url, "tls", f"TLS handshake with {url} failed: {underlying_reason(failed)}; "
                          "not retried")
    return None


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
