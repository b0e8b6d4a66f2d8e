"""The crawl console's guards: who may bind where, basic auth, and the CSRF check on every POST.

Secure by default, as Flower's options are not: the console binds 127.0.0.1 unless told
otherwise, and it refuses to bind any other address without credentials
(``CRAWLCLUSTER_WEB_AUTH``, ``user:password``, several comma-separated), because a
console that pauses and cancels crawls must not be open to a network. Every action that
changes something is a POST that carries the page's token (a form field or the
``X-CSRF-Token`` header) and comes from the console's own origin (``Origin``, or
``Referer`` when a browser sends no ``Origin``): a page on another site can make a browser
POST, but it can neither read the token nor claim the console's origin. Credentials are
compared in constant time and never written to a page or a log.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import logging
import secrets
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

from crawlcluster.errors import ConfigurationError

logger = logging.getLogger(__name__)

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def parse_auth(value: str) -> list[tuple[str, str]]:
    """``user:password[,user:password...]`` as pairs; an entry without a user or a password
    is a :class:`ConfigurationError` that names the user only (never a password)."""
    pairs = []
    for credential in (part.strip() for part in value.split(",")):
        if not credential:
            continue
        user, sep, password = credential.partition(":")
        if not (user and sep and password):
            raise ConfigurationError(
                "CRAWLCLUSTER_WEB_AUTH must be user:password (several: comma-separated), "
                f"got an entry without a user or password: {user or '(empty)'}:...")
        pairs.append((user, password))
    return pairs


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) is this machine only: 127.0.0.0/8, ::1, localhost."""
    host = host.strip().strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, credentials: list[tuple[str, str]]) -> None:
    """Refuse to serve on a non-loopback ``host`` without credentials, in one sentence."""
    if not is_loopback(host) and not credentials:
        raise ConfigurationError(
            f"refusing to serve the crawl console on {host} without credentials: anyone who reaches it "
            "could pause, cancel and re-run crawls. Set CRAWLCLUSTER_WEB_AUTH=user:password (several: "
            "comma-separated), or bind 127.0.0.1 (the default)")


class BasicAuth:
    """ASGI middleware: every request needs one of ``credentials`` (HTTP basic auth)."""

    def __init__(self, app: ASGIApp, credentials: list[tuple[str, str]], realm: str = "crawlcluster") -> None:
        self.app = app
        self.credentials = [(u.encode(), p.encode()) for u, p in credentials]
        self.realm = realm

    def allowed(self, header: bytes | None) -> bool:
        if not header or not header[:6].lower() == b"basic ":
            return False
        try:
            user, sep, password = base64.b64decode(header[6:].strip(), validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return False
        # every pair compared, in constant time, whatever matched
        matches = [hmac.compare_digest(user, u) & hmac.compare_digest(password, p)
                   for u, p in self.credentials]
        return bool(sep) and any(matches)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = dict(scope.get("headers") or []).get(b"authorization")
        if self.allowed(header):
            await self.app(scope, receive, send)
            return
        body = b"the crawl console asks for a user and password (CRAWLCLUSTER_WEB_AUTH)\n"
        await send({"type": "http.response.start", "status": 401, "headers": [
            (b"www-authenticate", f'Basic realm="{self.realm}", charset="UTF-8"'.encode()),
            (b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class CsrfGuard:
    """The token every page carries and every POST must return, and the same-origin check.

    The token is an HMAC of a secret drawn when the process starts, so it is the same on
    every page of one console process and unknown to any other site; restarting the console
    changes it (a page open across a restart asks to be reloaded)."""

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret or secrets.token_bytes(32)
        self.token = hmac.new(self._secret, b"crawlcluster-console-csrf", "sha256").hexdigest()

    def token_ok(self, sent: str | None) -> bool:
        return bool(sent) and hmac.compare_digest(str(sent), self.token)

    @staticmethod
    def same_origin(headers: Any, scheme: str) -> str | None:
        """None when the request comes from the console's own origin, else why not."""
        host = headers.get("host")
        origin = headers.get("origin")
        if origin is None or origin == "null":
            origin = headers.get("referer")
        if not origin:
            return "the request names no Origin or Referer"
        parts = urlsplit(origin)
        if not host or parts.netloc.lower() != host.lower() or parts.scheme != scheme:
            return f"the request comes from {parts.scheme}://{parts.netloc}, not from this console"
        return None

    def refusal(self, headers: Any, scheme: str, sent: str | None) -> str | None:
        """Why a POST is refused (a sentence), or None when it may go ahead."""
        if not self.token_ok(sent):
            return "the form's CSRF token is missing or out of date: reload the page and try again"
        return self.same_origin(headers, scheme)
