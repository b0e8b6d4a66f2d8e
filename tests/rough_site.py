"""A rough local site: a few hundred ordinary pages and every way a real site goes wrong.

``RoughSite().serve()`` starts two threaded HTTP servers on 127.0.0.1. The main one serves
an index, ten sections and ``pages`` ordinary pages, and these traps, all linked from the
index:

| path | what it does |
|---|---|
| ``/error/a``, ``/error/b`` | 500, every time |
| ``/error/recovers`` | 500 on the first request, then the page (a retry that succeeds) |
| ``/busy`` | 503 with ``Retry-After: 1`` on the first request, then the page |
| ``/hang`` | accepts the request and never answers |
| ``/stall`` | sends the headers and part of the body, then nothing |

and links to ``http://nosuch-host.invalid/`` (NXDOMAIN), to a refused port on 127.0.0.1
(a socket bound, then closed) and to ``/elsewhere`` on the second server, whose robots.txt
answers 500. The main server's robots.txt is 404 (everything allowed). Every request is
logged with its time, so tests check what was really fetched and when.

:class:`RoughSpider` follows every link and raises in its callback on pages whose path
ends in ``7``, for tests of callback failures.
"""

from __future__ import annotations

import http.server
import threading
import time
from collections import Counter
from typing import Any, Iterator
from urllib.parse import urlsplit

from crawlcluster import Request, Spider
from tests.queues import free_port

DEAD_HOST_URL = "http://nosuch-host.invalid/"
SECTIONS = 10
# how long /hang and /stall hold their connection at most (the server's stop ends it sooner)
HOLD_SECONDS = 300.0
STALL_BODY_BYTES = 5000


def _html(title: str, links: list[str]) -> bytes:
    anchors = "".join(f'<a href="{href}">{href}</a>\n' for href in links)
    return (f"<html><head><title>{title}</title></head>"
            f"<body><h1>{title}</h1>\n{anchors}</body></html>").encode()


class _Server:
    """One threaded HTTP server whose answers come from ``answer(path, count, handler)``."""

    def __init__(self, site: "RoughSite", name: str) -> None:
        self.site = site

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                path = self.path.split("?")[0]
                count = site.record(name, path)
                try:
                    site.answer(name, path, count, self)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the crawler gave up on a slow answer: that is the point of it

            def log_message(self, *args: Any) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that went away mid-answer is expected here, not a traceback

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
                                       daemon=True, name=f"rough-site-{name}")
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class RoughSite:
    """The site's content and its request log; :meth:`serve` starts its two servers."""

    def __init__(self, pages: int = 300) -> None:
        self.pages = pages
        self.lock = threading.Lock()
        self.log: list[tuple[float, str, str]] = []  # (monotonic time, server, path)
        self.counts: Counter[tuple[str, str]] = Counter()
        self.release = threading.Event()  # set at stop: /hang and /stall let go
        self.main: _Server | None = None
        self.other: _Server | None = None
        self.refused_url = ""

    # -- serving ---------------------------------------------------------------------
    def serve(self) -> "RoughSite":
        self.main = _Server(self, "main")
        self.other = _Server(self, "other")
        self.refused_url = f"http://127.0.0.1:{free_port()}/"
        return self

    def stop(self) -> None:
        self.release.set()
        for server in (self.main, self.other):
            if server is not None:
                server.stop()

    @property
    def url(self) -> str:
        assert self.main is not None, "call serve() first"
        return self.main.url

    @property
    def elsewhere_url(self) -> str:
        """A page on the second server, whose robots.txt answers 500."""
        assert self.other is not None, "call serve() first"
        return self.other.url + "/elsewhere"

    # -- what the site holds ------------------------------------------------------------
    def page_paths(self) -> list[str]:
        return [f"/page/{i}" for i in range(self.pages)]

    def section_paths(self) -> list[str]:
        return [f"/section/{k}/" for k in range(SECTIONS)]

    def ordinary_paths(self) -> list[str]:
        """Every path that answers 200 at once: index, sections, pages."""
        return ["/", *self.section_paths(), *self.page_paths()]

    def trap_paths(self) -> list[str]:
        return ["/error/a", "/error/b", "/error/recovers", "/busy", "/hang", "/stall"]

    def external_urls(self) -> list[str]:
        """The links that leave the main server: a dead name, a refused port, a host whose
        robots.txt answers 500."""
        return [DEAD_HOST_URL, self.refused_url, self.elsewhere_url]

    def start_urls(self) -> list[str]:
        """The index and every external link: a link spider limited to its start hosts
        then reaches every trap."""
        return [self.url + "/", *self.external_urls()]

    def _section_of(self, page: int) -> int:
        return page * SECTIONS // self.pages

    def _body_of(self, path: str) -> bytes | None:
        if path == "/":
            links = [*self.section_paths(), *self.trap_paths(), *self.external_urls()]
            return _html("Rough site", links)
        if path.startswith("/section/"):
            k = int(path.split("/")[2])
            pages = [f"/page/{i}" for i in range(self.pages) if self._section_of(i) == k]
            return _html(f"Section {k}", ["/", *pages])
        if path.startswith("/page/"):
            i = int(path.rsplit("/", 1)[1])
            if not 0 <= i < self.pages:
                return None
            neighbours = [f"/page/{j}" for j in (i + 1, i + 2) if j < self.pages]
            return _html(f"Page {i}", [f"/section/{self._section_of(i)}/", *neighbours])
        if path in ("/error/recovers", "/busy"):
            return _html(f"Recovered {path}", ["/"])
        return None

    # -- answering ----------------------------------------------------------------------
    def record(self, server: str, path: str) -> int:
        with self.lock:
            self.counts[(server, path)] += 1
            self.log.append((time.monotonic(), server, path))
            return self.counts[(server, path)]

    def answer(self, server: str, path: str, count: int, handler: http.server.BaseHTTPRequestHandler) -> None:
        if server == "other":
            if path == "/robots.txt":
                return self._send(handler, 500, b"robots.txt is broken here")
            return self._send(handler, 200, _html("Elsewhere", []))
        if path == "/robots.txt":
            return self._send(handler, 404, b"no robots.txt")
        if path in ("/error/a", "/error/b") or (path == "/error/recovers" and count == 1):
            return self._send(handler, 500, b"internal error")
        if path == "/busy" and count == 1:
            return self._send(handler, 503, b"busy", {"Retry-After": "1"})
        if path == "/hang":
            self.release.wait(HOLD_SECONDS)  # read the request, then say nothing
            return
        if path == "/stall":
            handler.send_response(200)
            handler.send_header("Content-Type", "text/html")
            handler.send_header("Content-Length", str(STALL_BODY_BYTES))
            handler.end_headers()
            handler.wfile.write(b"<html><head><title>Stalled</title></head><body>" + b"x" * 500)
            handler.wfile.flush()
            self.release.wait(HOLD_SECONDS)
            return
        body = self._body_of(path)
        if body is None:
            return self._send(handler, 404, b"not found")
        self._send(handler, 200, body)

    @staticmethod
    def _send(handler: http.server.BaseHTTPRequestHandler, status: int, body: bytes,
              headers: dict[str, str] | None = None) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type",
                            "text/html; charset=utf-8" if body.startswith(b"<html") else "text/plain")
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    # -- the log ------------------------------------------------------------------------
    def hits(self, path: str, server: str = "main") -> list[float]:
        """When ``path`` was requested (monotonic seconds), oldest first."""
        with self.lock:
            return [t for t, s, p in self.log if s == server and p == path]

    def hit_counts(self, server: str = "main") -> Counter[str]:
        with self.lock:
            return Counter({p: n for (s, p), n in self.counts.items() if s == server})


class RoughSpider(Spider):
    """Follows every link (any host) and stores each page's url and title; its callback
    raises on pages whose path ends in ``fail_suffix`` (``7``; None: never), so those rows
    end failed with kind ``callback``. Submit with ``spider_kwargs={"start_urls": site.start_urls()}``."""

    name = "rough"
    fail_suffix: str | None = "7"

    def parse(self, response: Any) -> Iterator[Any]:
        path = urlsplit(response.url).path
        if self.fail_suffix and path.endswith(self.fail_suffix):
            raise ValueError(f"RoughSpider does not parse {path}: its path ends in {self.fail_suffix}")
        yield {"url": response.url, "title": response.title}
        for url in response.links():
            yield Request(url)
