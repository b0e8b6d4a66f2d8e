"""A local HTTP server whose answers the test scripts per path, logging every request with
its time and headers: the ground truth for retry, re-crawl and politeness tests."""

from __future__ import annotations

import http.server
import threading
import time
from collections import defaultdict
from typing import Callable

Answer = tuple[int, dict[str, str], bytes]
Handler = Callable[[int, dict[str, str]], Answer]


def page(title: str, links: tuple[str, ...] = (), extra_headers: dict[str, str] | None = None) -> Answer:
    anchors = "".join(f'<a href="{href}">{href}</a>' for href in links)
    body = f"<html><head><title>{title}</title></head><body>{anchors}</body></html>".encode()
    return 200, {"Content-Type": "text/html; charset=utf-8", **(extra_headers or {})}, body


class ScriptedSite:
    def __init__(self) -> None:
        self.routes: dict[str, Handler] = {}
        self.log: list[tuple[float, str, dict[str, str]]] = []
        self.counts: dict[str, int] = defaultdict(int)
        self.in_flight = 0
        self.max_in_flight = 0
        self.delay_seconds = 0.0
        self.lock = threading.Lock()
        site = self

        class RequestHandler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                headers = {k.lower(): v for k, v in self.headers.items()}
                with site.lock:
                    site.counts[self.path] += 1
                    count = site.counts[self.path]
                    site.log.append((time.monotonic(), self.path, headers))
                    site.in_flight += 1
                    site.max_in_flight = max(site.max_in_flight, site.in_flight)
                try:
                    if site.delay_seconds:
                        time.sleep(site.delay_seconds)
                    handler = site.routes.get(self.path.split("?")[0])
                    status, answer_headers, body = handler(count, headers) if handler else (404, {},
                                                                                            b"missing")
                    self.send_response(status)
                    for key, value in answer_headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                finally:
                    with site.lock:
                        site.in_flight -= 1

            def log_message(self, *args) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256

        self.server = Server(("127.0.0.1", 0), RequestHandler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
                                       daemon=True)
        self.thread.start()

    def route(self, path: str, handler: Handler) -> None:
        self.routes[path] = handler

    def hits(self, path: str) -> list[tuple[float, dict[str, str]]]:
        with self.lock:
            return [(t, h) for t, p, h in self.log if p == path]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
