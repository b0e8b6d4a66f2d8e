"""The fetcher's connections through the address guard: an httpcore network backend that
resolves each name once with :class:`crawlcluster.netguard.AddressPolicy` and connects to
the address the policy allowed, and the per-trust HTTP clients built on it.

Checking a URL's host before the request and letting httpx connect afterwards would resolve
the name twice, and a name that answers a public address the first time and ``127.0.0.1``
the second (DNS rebinding) would slip through. Here the only resolution is the policy's:
:meth:`GuardedBackend.connect_tcp` gets the name from httpcore, asks the policy for the
addresses it may use (refusing before any packet is sent), and opens the TCP connection to
one of them; TLS still verifies and sends the name (httpcore passes the origin's host as
the server name to ``start_tls``), and the Host header is the URL's.

A connection in a pool is reused for any later request to the same scheme, host and port.
A project that trusts a private host (its start host, its ``allow_private``) must not hand
that connection to a project that does not, so each distinct trust list has a client of its
own (:class:`TrustedClients`), and a request goes to its project's client only when the
trust can matter for it (its host is named, or the trust names a network); every other
request goes through the shared client, whose policy is the cluster's alone.
"""

from __future__ import annotations

import asyncio
import select
import socket
import ssl
import time
from collections import OrderedDict
from typing import Any, Iterable, Sequence

import httpcore
import httpx

from crawlcluster.netguard import AddressPolicy, is_network
from workers.light_pool import LightPool

__all__ = ["GuardedBackend", "guarded_transport", "TrustedClients"]

# distinct trust lists with a client of their own kept at once; the least recently used
# idle one is closed beyond this (a worker serving many projects keeps few sockets open)
MAX_TRUSTED_CLIENTS = 32


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """A network backend for httpcore on asyncio's streams, connecting only to addresses
    ``policy`` allows."""

    def __init__(self, policy: AddressPolicy) -> None:
        self.policy = policy

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        """Resolve ``host`` once through the policy (raises
        :class:`~crawlcluster.netguard.AddressRefused` before any connection) and connect to
        the first allowed address that answers, all within ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            addresses = await asyncio.wait_for(self.policy.allowed_addresses(host, port), timeout)
        except asyncio.TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} took longer than {timeout:g}s") from None
        except socket.gaierror as exc:  # kept as the cause: the fetcher names it a dns error
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc.strerror or exc}") from exc
        failure: httpcore.ConnectError | None = None
        for address in addresses:
            left = None if deadline is None else max(0.001, deadline - time.monotonic())
            try:
                return await _AsyncioStream.connect(address, port, left)
            except httpcore.ConnectError as exc:
                failure = exc
        if failure is not None:
            raise failure
        raise httpcore.ConnectError(f"{host} resolves to no address")

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("crawlcluster does not fetch over unix sockets")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class _AsyncioStream(httpcore.AsyncNetworkStream):
    """A connection as asyncio's own stream pair, in the shape httpcore's HTTP/1.1 connection
    reads and writes.

    httpcore's anyio stream opens a cancel scope (``fail_after``) around every read and
    write; with small pages that was a sixth of the fetch path's CPU. Here a read waits under
    ``asyncio.timeout`` (one timer), and a write the kernel takes at once waits for nothing.
    The errors are httpcore's, as from its own backends (a timeout is
    ``ReadTimeout``/``WriteTimeout``/``ConnectTimeout``, a socket error
    ``ReadError``/``WriteError``, a failed TLS handshake ``ConnectError`` with the
    ``ssl.SSLError`` as its cause). Whether an idle connection was closed by its server (the
    question the pool asks before reusing it) is one ``poll`` of the socket."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._socket: Any = writer.get_extra_info("socket")

    @classmethod
    async def connect(cls, address: str, port: int, timeout: float | None) -> "_AsyncioStream":
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(address, port)
        except TimeoutError:
            raise httpcore.ConnectTimeout(
                f"connecting to {address}:{port} took longer than {_secs(timeout)}") from None
        except OSError as exc:
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        return cls(reader, writer)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)
        except TimeoutError:
            raise httpcore.ReadTimeout(f"no byte within {_secs(timeout)}") from None
        except OSError as exc:
            raise httpcore.ReadError(str(exc) or type(exc).__name__) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        writer = self._writer
        try:
            if writer.is_closing():
                raise ConnectionResetError("the connection is closed")
            writer.write(buffer)
            if writer.transport.get_write_buffer_size():  # the kernel did not take it all at once
                async with asyncio.timeout(timeout):
                    await writer.drain()
        except TimeoutError:
            raise httpcore.WriteTimeout(f"could not send within {_secs(timeout)}") from None
        except OSError as exc:
            raise httpcore.WriteError(str(exc) or type(exc).__name__) from exc

    async def aclose(self) -> None:
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except (OSError, ssl.SSLError):
            pass  # closing a connection that broke

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        except BaseException as exc:
            self._writer.transport.abort()
            if isinstance(exc, TimeoutError):
                raise httpcore.ConnectTimeout(
                    f"the TLS handshake took longer than {_secs(timeout)}") from None
            if isinstance(exc, (OSError, ssl.SSLError)):
                raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
            raise
        return _AsyncioStream(self._reader, self._writer)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            return self._reader.at_eof() or self._socket is None or _readable(self._socket)
        if info == "socket":
            return self._socket
        if info == "ssl_object":
            return self._writer.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._writer.get_extra_info("sockname")
        if info == "server_addr":
            return self._writer.get_extra_info("peername")
        return None


def _secs(timeout: float | None) -> str:
    # a kernel's ETIMEDOUT is a TimeoutError too, with no timeout of ours set
    return "the system's timeout" if timeout is None else f"{timeout:g}s"


def _readable(sock: Any) -> bool:
    """Whether ``sock`` has something to read now (for an idle pooled connection: the
    server closed it); a closed socket counts as readable, so the pool drops it."""
    if sock.fileno() == -1:
        return True
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


def guarded_transport(policy: AddressPolicy, limits: httpx.Limits) -> httpx.AsyncHTTPTransport:
    """httpx's transport on a :class:`~workers.light_pool.LightPool` of connections made by a
    :class:`GuardedBackend` (httpx has no argument for either)."""
    transport = httpx.AsyncHTTPTransport(limits=limits, trust_env=False)
    transport._pool = LightPool(  # type: ignore[assignment]
        ssl_context=httpx.create_ssl_context(trust_env=False),
        max_connections=limits.max_connections or 100,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=GuardedBackend(policy),
    )
    return transport


class TrustedClients:
    """One transport (a pool of connections) per distinct trust list (the key ``()`` is the
    shared, cluster-only one), each guarded by the cluster's policy plus that trust.

    The fetcher sends its requests to these transports itself: httpx's client adds, per
    request, auth, redirect and cookie layers that do nothing here (redirects are rows of
    their own, and a spider's cookies are a header the fetcher writes)."""

    def __init__(self, policy: AddressPolicy, limits: httpx.Limits,
                 max_clients: int = MAX_TRUSTED_CLIENTS) -> None:
        self.policy = policy
        self._limits = limits
        self.max_clients = max_clients
        self._clients: OrderedDict[tuple[str, ...], httpx.AsyncHTTPTransport] = OrderedDict()
        self._in_use: dict[tuple[str, ...], int] = {}
        self._trusting: dict[tuple[str, ...], AddressPolicy] = {}  # a message's trust, parsed once

    def key_for(self, url: httpx.URL, trust: Sequence[str]) -> tuple[str, ...]:
        """The client a request to ``url`` of a project trusting ``trust`` goes through: its
        project's own when the trust can let it reach a private address, else the shared one."""
        if not trust or not self.policy.enabled:
            return ()
        trusted = self._trusting.get(tuple(trust))
        if trusted is None:
            if len(self._trusting) >= 4 * self.max_clients:
                self._trusting.clear()
            trusted = self._trusting[tuple(trust)] = self.policy.trusting(trust)
        if trusted is self.policy:
            return ()
        port = url.port or (443 if url.scheme == "https" else 80)
        host = url.raw_host.decode("ascii")
        if trusted.host_allowed(host, port) or any(is_network(entry) for entry in trusted.allow):
            return tuple(sorted(trusted.allow))
        return ()

    def acquire(self, key: tuple[str, ...]) -> httpx.AsyncHTTPTransport:
        """The transport for ``key``, counted in use until :meth:`release`."""
        client = self._clients.get(key)
        if client is None:
            policy = AddressPolicy(self.policy.enabled, key, self.policy.host_map) if key else self.policy
            client = self._clients[key] = guarded_transport(policy, self._limits)
        self._clients.move_to_end(key)
        self._in_use[key] = self._in_use.get(key, 0) + 1
        return client

    async def release(self, key: tuple[str, ...]) -> None:
        """One use of ``key``'s transport ended; idle trusted ones beyond the bound are closed."""
        self._in_use[key] -= 1
        excess = len(self._clients) - self.max_clients
        for old in [k for k in self._clients if k and not self._in_use.get(k)][:max(0, excess)]:
            await self._clients.pop(old).aclose()
            self._in_use.pop(old, None)

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
        self._in_use.clear()
