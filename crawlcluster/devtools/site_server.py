"""The demo site's HTTP server: a threaded HTTP/1.1 server on a local port that answers
each request target with the site's response, counts every target it receives (the tests'
ground truth of what a crawler fetched), holds the slow pages, and stops without waiting
on idle keep-alive connections. It knows the site only by the few names in
:class:`ServedSite`; :mod:`crawlcluster.devtools.demo_site` is the site itself."""

from __future__ import annotations

import collections
import logging
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import NamedTuple, Protocol
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

# a client that goes away mid-request is its business, not an error of the site
CLIENT_GONE = (ConnectionError, TimeoutError)


class Response(NamedTuple):
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


class ServedSite(Protocol):
    """What the server asks of a site: its responses, and which pages change with the number
    of requests (never cached) or answer slowly."""

    pages: int
    traps: bool
    flaky: dict[str, int]
    slow_pages: dict[str, float]

    def respond(self, target: str, host: str, port: int, nth: int = 1) -> Response: ...


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "crawlcluster-demo/1.0"
    disable_nagle_algorithm = True  # headers and body are separate writes; avoid 40 ms stalls
    timeout = 30  # idle keep-alive connections eventually free their thread
    server: _DemoHTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner._track(self.connection, False)

    def do_GET(self) -> None:
        self._serve(send_body=True)

    def do_HEAD(self) -> None:
        self._serve(send_body=False)

    def _serve(self, send_body: bool) -> None:
        owner = self.server.owner
        nth = owner._record(self.path)  # before responding, so a client never sees an uncounted hit
        resp = owner._response(self.path, nth)
        delay = owner.site.slow_pages.get(urlsplit(self.path).path)
        if delay:
            owner._stopping.wait(delay)  # stop() cuts it short
        self.send_response(resp.status)
        for name, value in resp.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(resp.body)))
        self.end_headers()
        if send_body:
            self.wfile.write(resp.body)

    def log_message(self, format: str, *args: object) -> None:
        logger.debug("%s - " + format, self.address_string(), *args)


class _DemoHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False  # stop() must not wait on idle keep-alive connections
    request_queue_size = 256  # many concurrent clients connecting at once
    owner: SiteServer

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that hangs up (reset, broken pipe, timeout) is logged at debug level;
        anything else is a bug of the site and logged with its traceback, never printed
        over the demo's progress bar."""
        exc = sys.exc_info()[1]
        if isinstance(exc, CLIENT_GONE):
            logger.debug("demo site: client %s went away: %s", client_address, exc)
        else:
            logger.error("demo site: error while serving %s", client_address, exc_info=True)


class SiteServer:
    """A running site (the demo site) on a local port, counting every request target it receives."""

    def __init__(self, site: ServedSite, host: str = "127.0.0.1", port: int = 0) -> None:
        self.site = site
        self._lock = threading.Lock()
        self._hits: collections.Counter[str] = collections.Counter()
        self._log: list[tuple[float, str]] = []
        self._cache: dict[str, Response] = {}
        self._conns: set[socket.socket] = set()
        self._stopped = False
        self._stopping = threading.Event()
        self._httpd = _DemoHTTPServer((host, port), _Handler)  # binds and listens
        self._httpd.owner = self
        self.host = host
        self.port: int = self._httpd.server_address[1]
        self.url: str = f"http://{host}:{self.port}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
            name=f"demo-site-{self.port}", daemon=True,
        )
        self._thread.start()
        logger.info("demo site (%d pages, traps=%s) serving at %s", site.pages, site.traps, self.url)

    def __enter__(self) -> SiteServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def hits(self) -> collections.Counter[str]:
        with self._lock:
            return collections.Counter(self._hits)

    def hit_log(self) -> list[tuple[float, str]]:
        with self._lock:
            return list(self._log)

    def reset_hits(self) -> None:
        with self._lock:
            self._hits.clear()
            self._log.clear()

    def stop(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            conns = list(self._conns)
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        for conn in conns:  # wake handler threads blocked on idle keep-alive reads
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(timeout=5)
        logger.info("demo site at %s stopped", self.url)

    def _record(self, target: str) -> int:
        """Count a request for ``target``; return how many it has had, this one included."""
        with self._lock:
            self._hits[target] += 1
            self._log.append((time.monotonic(), target))
            return self._hits[target]

    def _response(self, target: str, nth: int = 1) -> Response:
        if urlsplit(target).path in self.site.flaky:
            return self.site.respond(target, self.host, self.port, nth)  # changes with nth: never cached
        resp = self._cache.get(target)
        if resp is None:
            resp = self.site.respond(target, self.host, self.port)
            if len(self._cache) < 20_000:  # arbitrary query strings must not grow it forever
                self._cache[target] = resp
        return resp

    def _track(self, conn: socket.socket, alive: bool) -> None:
        with self._lock:
            if alive:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)
