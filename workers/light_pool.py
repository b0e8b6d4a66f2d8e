"""A connection pool for the fetcher that costs O(1) per request: idle HTTP/1.1 connections
kept per origin, a slot per request in flight, and httpcore's own connection class on the wire.

httpcore's :class:`~httpcore.AsyncConnectionPool` re-examines every pooled connection each
time a request enters or leaves it (is it closed, expired, idle; is the socket readable):
with 64 connections that was a tenth of a small-page crawl's CPU. This pool asks those
questions only of the connection it is about to reuse (and of every idle one once per
``keepalive_expiry``), which gives the same guarantees: a connection the server closed
(readable while idle) or past ``keepalive_expiry`` is closed instead of reused, at most
``max_connections`` are open at once (the oldest idle one is closed to make room for
another origin's), at most ``max_connections`` requests are in flight, and a request waits
for a slot no longer than its ``pool`` timeout. Only HTTP/1.1 is spoken (the fetcher never
asked for HTTP/2), so a connection is :class:`httpcore.AsyncHTTP11Connection` on a stream
from the (guarded) network backend.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import Any, AsyncIterator

import httpcore

__all__ = ["LightPool"]

_Key = tuple[bytes, bytes, int]
# methods sent again on a fresh connection when a kept-alive one turns out closed by the server
_IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"))


class LightPool:
    """What :class:`httpx.AsyncHTTPTransport` calls as its pool (``handle_async_request``,
    ``aclose``), keeping connections per origin."""

    def __init__(self, *, ssl_context: ssl.SSLContext, max_connections: int, keepalive_expiry: float | None,
                 network_backend: httpcore.AsyncNetworkBackend) -> None:
        self._ssl_context = ssl_context
        ssl_context.set_alpn_protocols(["http/1.1"])
        self._max_connections = max_connections
        self._keepalive_expiry = keepalive_expiry
        self._backend = network_backend
        self._slots = asyncio.Semaphore(max_connections)
        # idle connections by origin, and all idle ones oldest first (the one closed for room)
        self._idle: dict[_Key, list[httpcore.AsyncHTTP11Connection]] = {}
        self._idle_order: dict[httpcore.AsyncHTTP11Connection, _Key] = {}
        self._open = 0  # connections open: idle ones plus those serving a request
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False
        self._sweep_at = 0.0

    async def handle_async_request(self, request: httpcore.Request) -> httpcore.Response:
        if self._closed:
            raise RuntimeError("the connection pool is closed")
        url = request.url
        if url.scheme not in (b"http", b"https"):
            raise httpcore.UnsupportedProtocol(f"the URL's scheme is {url.scheme.decode()!r}, "
                                               "not 'http' or 'https'")
        if not url.host:
            raise httpcore.UnsupportedProtocol("the URL has no host")
        timeouts = request.extensions.get("timeout", {})
        await self._take_slot(timeouts.get("pool"))
        try:
            key: _Key = (url.scheme, url.host, url.port or (443 if url.scheme == b"https" else 80))
            retry_stale = request.method.upper() in _IDEMPOTENT
            while True:
                connection, reused = await self._connection_for(key, request)
                try:
                    response = await connection.handle_async_request(request)
                except httpcore.ConnectionNotAvailable:
                    self._forget(connection)
                    continue
                except (httpcore.RemoteProtocolError, httpcore.ReadError, httpcore.WriteError):
                    self._after_use(key, connection)
                    if reused and retry_stale:
                        # the server closed a kept-alive connection as it was taken from the
                        # pool (its FIN not seen yet): the request never reached it; once more,
                        # on a fresh connection, as browsers and urllib3 do for such a request
                        retry_stale = False
                        self._drop_idle(key)
                        continue
                    raise
                except BaseException:
                    self._after_use(key, connection)
                    raise
                break
        except BaseException:
            self._slots.release()
            raise
        return httpcore.Response(status=response.status, headers=response.headers,
                                 content=_PooledBody(self, key, connection, response.stream),
                                 extensions=response.extensions)

    async def _take_slot(self, timeout: float | None) -> None:
        if not self._slots.locked():
            await self._slots.acquire()
            return
        try:
            await asyncio.wait_for(self._slots.acquire(), timeout)
        except asyncio.TimeoutError:
            raise httpcore.PoolTimeout(f"no connection free within {timeout}s") from None

    async def _connection_for(self, key: _Key, request: httpcore.Request
                              ) -> tuple[httpcore.AsyncHTTP11Connection, bool]:
        """An idle connection to ``key``'s origin still fit for use, else a new one; and
        whether it was reused."""
        while key in self._idle:
            connection = self._take_idle(key)
            if connection.is_available() and not connection.has_expired():
                return connection, True
            self._forget(connection)
        if self._open >= self._max_connections and self._idle_order:
            oldest, oldest_key = next(iter(self._idle_order.items()))
            self._forget(self._take_idle(oldest_key, oldest))
        self._open += 1
        try:
            return await self._connect(key, request), False
        except BaseException:
            self._open -= 1
            raise

    def _drop_idle(self, key: _Key) -> None:
        """Close ``key``'s idle connections: the server closed one, and likely its peers too."""
        while key in self._idle:
            self._forget(self._take_idle(key))

    async def _connect(self, key: _Key, request: httpcore.Request) -> httpcore.AsyncHTTP11Connection:
        scheme, host, port = key
        timeout = request.extensions.get("timeout", {}).get("connect")
        stream = await self._backend.connect_tcp(host.decode("ascii"), port, timeout=timeout)
        if scheme == b"https":
            try:
                sni = request.extensions.get("sni_hostname") or host.decode("ascii")
                stream = await stream.start_tls(self._ssl_context, server_hostname=sni, timeout=timeout)
            except BaseException:
                await stream.aclose()
                raise
        connection = httpcore.AsyncHTTP11Connection(httpcore.Origin(scheme, host, port), stream,
                                                    keepalive_expiry=self._keepalive_expiry)
        # this pool hands a connection to one request at a time, so the connection's own lock
        # guards nothing here; anyio's lock yields to the loop, shielded from cancellation, on
        # each acquire (twice a request: a tenth of the fetch path's CPU)
        connection._state_lock = _NO_LOCK  # type: ignore[assignment]
        return connection

    def _take_idle(self, key: _Key, connection: httpcore.AsyncHTTP11Connection | None = None
                   ) -> httpcore.AsyncHTTP11Connection:
        """The newest idle connection to ``key`` (or ``connection``), out of the idle lists."""
        idle = self._idle[key]
        if connection is None:
            connection = idle.pop()
        else:
            idle.remove(connection)
        if not idle:
            del self._idle[key]
        del self._idle_order[connection]
        return connection

    def _after_use(self, key: _Key, connection: httpcore.AsyncHTTP11Connection) -> None:
        """A request on ``connection`` ended: kept for the next one when reusable. Now and
        then (every ``keepalive_expiry``) the idle connections past it are closed, as
        httpcore's pool does on every request, so a host never asked again keeps no socket."""
        if connection.is_idle() and not self._closed:
            self._idle.setdefault(key, []).append(connection)
            self._idle_order[connection] = key
        else:
            self._forget(connection)
        if self._keepalive_expiry is not None and time.monotonic() >= self._sweep_at:
            self._sweep_at = time.monotonic() + self._keepalive_expiry
            for old, old_key in list(self._idle_order.items()):
                if old.has_expired():
                    self._forget(self._take_idle(old_key, old))

    def _forget(self, connection: httpcore.AsyncHTTP11Connection) -> None:
        """Take ``connection`` out of the count, closing its socket unless already closed."""
        self._open -= 1
        if not connection.is_closed():
            task = asyncio.ensure_future(connection.aclose())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def aclose(self) -> None:
        self._closed = True
        idle = list(self._idle_order)
        self._idle.clear()
        self._idle_order.clear()
        for connection in idle:
            self._open -= 1
            await connection.aclose()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


class _NoLock:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc_info: object) -> None:
        return None


_NO_LOCK = _NoLock()


class _PooledBody:
    """A response body that hands its connection back to the pool (and frees the request's
    slot) once, when it is closed."""

    def __init__(self, pool: LightPool, key: _Key, connection: httpcore.AsyncHTTP11Connection,
                 stream: Any) -> None:
        self._pool = pool
        self._key = key
        self._connection = connection
        self._stream = stream
        self._done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for part in self._stream:
            yield part

    async def aclose(self) -> None:
        if self._done:
            return
        self._done = True
        try:
            await self._stream.aclose()
        finally:
            self._pool._after_use(self._key, self._connection)
            self._pool._slots.release()
