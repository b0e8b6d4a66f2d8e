"""The browser's guard proxy: a small forward proxy in the render worker through which every
request Chromium makes must pass, so that the address guard decides where it connects.

Chromium resolves names and connects by itself; pointed at this proxy (``--proxy-server``
for the browser, a ``proxyServer`` of its own for each page's browser context) it hands
over the name instead. The proxy resolves it with the page's
:class:`~crawlcluster.netguard.AddressPolicy` (the cluster's, trusting the page's project
hosts) and connects to an address the policy returned, never to a name; a refused target
gets a ``403`` whose body names the address and why, and is remembered in
:attr:`GuardProxy.refused` so the renderer can tell a refused main frame from a page that
answered 403. It speaks ``CONNECT`` (https and websocket tunnels) and absolute-URI HTTP
requests (one per connection: the upstream is asked to close, so the next request is
looked at again). It listens on 127.0.0.1 on an ephemeral port, on the renderer's loop.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from urllib.parse import urlsplit

from crawlcluster.netguard import AddressPolicy, AddressRefused

logger = logging.getLogger(__name__)

MAX_HEAD_BYTES = 64 * 1024
HEAD_TIMEOUT_SECONDS = 30.0
CONNECT_TIMEOUT_SECONDS = 10.0
RELAY_CHUNK = 64 * 1024
HOP_BY_HOP = {"proxy-connection", "proxy-authorization", "connection", "keep-alive", "te", "trailer",
              "upgrade", "proxy-authenticate", "transfer-encoding-proxy"}


class ProxyRefusal(Exception):
    """A request the proxy answers itself: ``status``, a sentence, and the kind of fetch error
    it is for the page whose main frame it was (``dns``, ``connect``; ``refused`` is apart)."""

    def __init__(self, status: int, reason: str, kind: str = "navigation") -> None:
        super().__init__(reason)
        self.status = status
        self.kind = kind


def _split_host_port(authority: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(f"//{authority}")
    try:
        port = parts.port or default_port
    except ValueError:
        raise ProxyRefusal(400, f"bad port in {authority!r}") from None
    if not parts.hostname:
        raise ProxyRefusal(400, f"no host in {authority!r}")
    return parts.hostname, port


class GuardProxy:
    """One listener answering with one policy (a browser's, or one page's)."""

    def __init__(self, policy: AddressPolicy, *, connect_timeout_seconds: float = CONNECT_TIMEOUT_SECONDS,
                 label: str = "browser") -> None:
        self.policy = policy
        self.connect_timeout_seconds = connect_timeout_seconds
        self.label = label
        self.refused: dict[tuple[str, int], str] = {}  # (host, port) -> why, first refusal of each
        self.refusals = 0
        self.unreachable: dict[tuple[str, int], tuple[str, str]] = {}  # (host, port) -> (kind, why)
        self._server: asyncio.AbstractServer | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> GuardProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=MAX_HEAD_BYTES)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        """Stop listening and cut every connection still open (a page's tunnels end with it)."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    @staticmethod
    def _key_of(url: str) -> tuple[str, int] | None:
        parts = urlsplit(url)
        try:
            default = 443 if parts.scheme in ("https", "wss") else 80
            return (parts.hostname or "").lower(), parts.port or default
        except ValueError:
            return None

    def was_refused(self, url: str) -> str | None:
        """Why the guard refused ``url``'s host and port, if it did."""
        key = self._key_of(url)
        return self.refused.get(key) if key else None

    def could_not_reach(self, url: str) -> tuple[str, str] | None:
        """``(kind, why)`` when the proxy could not resolve or connect to ``url``'s host and port."""
        key = self._key_of(url)
        return self.unreachable.get(key) if key else None

    # -- one client connection ----------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open.add(writer)
        upstream: asyncio.StreamWriter | None = None
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_SECONDS)
            try:
                method, target, lines = self._parse(head)
                if method == "CONNECT":
                    host, port = _split_host_port(target, 443)
                    up_reader, upstream = await self._connect(host, port)
                    writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                else:
                    host, port, request = self._origin_request(method, target, lines)
                    up_reader, upstream = await self._connect(host, port)
                    upstream.write(request)
            except ProxyRefusal as refusal:
                self._answer(writer, refusal.status, str(refusal))
                await writer.drain()
                return
            self._open.add(upstream)
            await asyncio.gather(self._relay(reader, upstream), self._relay(up_reader, writer))
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ConnectionError, OSError):
            pass  # a client that went away or sent no request: nothing to answer
        finally:
            for end in (upstream, writer):
                if end is not None:
                    self._open.discard(end)
                    end.close()

    def _parse(self, head: bytes) -> tuple[str, str, list[str]]:
        lines = head.decode("latin-1").split("\r\n")
        request_line = lines[0].split(" ")
        if len(request_line) != 3:
            raise ProxyRefusal(400, "malformed request line")
        method, target, _version = request_line
        return method.upper(), target, [line for line in lines[1:] if line]

    def _origin_request(self, method: str, target: str, lines: list[str]) -> tuple[str, int, bytes]:
        """The request as the origin server must see it: origin-form target, no proxy headers,
        and ``Connection: close`` (one request per proxied connection)."""
        parts = urlsplit(target)
        if parts.scheme != "http":
            raise ProxyRefusal(400, f"the proxy forwards http:// URLs and CONNECT only, not {target[:200]!r}")
        host, port = _split_host_port(parts.netloc.rpartition("@")[2], 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = [line for line in lines if line.split(":", 1)[0].strip().lower() not in HOP_BY_HOP]
        head = "\r\n".join([f"{method} {path} HTTP/1.1", *headers, "Connection: close", "", ""])
        return host, port, head.encode("latin-1")

    async def _connect(self, host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Resolve ``host`` once with the policy and connect to an address it allowed."""
        try:
            addresses = await self.policy.allowed_addresses(host, port)
        except AddressRefused as refused:
            self._refuse(host, port, str(refused))
            raise ProxyRefusal(403, str(refused)) from None
        except (socket.gaierror, UnicodeError) as exc:
            raise self._unreachable(host, port, "dns", f"cannot resolve {host}: {exc}") from None
        last: Exception | None = None
        for address in addresses:
            try:
                return await asyncio.wait_for(asyncio.open_connection(address, port),
                                              self.connect_timeout_seconds)
            except (OSError, asyncio.TimeoutError) as exc:
                last = exc
        raise self._unreachable(host, port, "connect",
                                f"cannot connect to {host}:{port} ({last or 'no address'})")

    def _unreachable(self, host: str, port: int, kind: str, why: str) -> ProxyRefusal:
        self.unreachable.setdefault((host.strip("[]").lower(), port), (kind, why))
        return ProxyRefusal(502, why, kind)

    def _refuse(self, host: str, port: int, why: str) -> None:
        self.refusals += 1
        key = (host.strip("[]").lower(), port)
        if key not in self.refused:
            self.refused[key] = why
            logger.info("browser request refused: %s", why)  # once per host and port and context

    @staticmethod
    def _answer(writer: asyncio.StreamWriter, status: int, reason: str) -> None:
        body = (reason + "\n").encode("utf-8")
        phrase = {400: "Bad Request", 403: "Forbidden", 502: "Bad Gateway"}.get(status, "Error")
        writer.write(f"HTTP/1.1 {status} {phrase}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                     f"Content-Length: {len(body)}\r\nX-Crawlcluster-Guard: refused\r\n"
                     "Connection: close\r\n\r\n".encode("latin-1") + body)

    @staticmethod
    async def _relay(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while True:
                chunk = await source.read(RELAY_CHUNK)
                if not chunk:
                    break
                sink.write(chunk)
                await sink.drain()
            if sink.can_write_eof():
                sink.write_eof()
        except (ConnectionError, OSError):
            sink.transport.abort()
