"""The fetcher's connection pool (workers/light_pool.py) against a real local server that
counts its connections: a keep-alive connection the server closed while it sat idle is not
reused (the next fetch opens another and succeeds), and fetches to more origins than the
pool's bound leave no more sockets open than ``concurrency`` (the oldest idle one is closed
to make room), while a kept one is reused."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import pytest

from crawlcluster.netguard import AddressPolicy
from workers.fetcher import Fetcher


class _Counting(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.open = 0
        self.opened = 0
        self.close_after_one = False


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Counting

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.open += 1
            self.server.opened += 1

    def finish(self) -> None:
        with self.server.lock:
            self.server.open -= 1
        super().finish()

    def do_GET(self) -> None:
        body = b"ok " + self.path.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        # answered with keep-alive, then closed: what a server does when its idle timeout passes
        self.close_connection = self.server.close_after_one


@pytest.fixture
def server() -> Iterator[_Counting]:
    httpd = _Counting()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


# six names for the one server on 127.0.0.1: six origins to the pool
HOSTS = [f"site{n}.test" for n in range(6)]


def _fetcher(concurrency: int) -> Fetcher:
    return Fetcher(user_agent="crawlcluster-test/1", connect_timeout_seconds=2, read_timeout_seconds=2,
                   max_body_bytes=100_000, concurrency=concurrency,
                   policy=AddressPolicy(allow=("127.0.0.1",), host_map=dict.fromkeys(HOSTS, "127.0.0.1")))


def test_a_connection_the_server_closed_while_idle_is_not_reused(server: _Counting) -> None:
    server.close_after_one = True
    fetcher = _fetcher(4)
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        for n in range(5):
            [result] = fetcher.fetch_many([{"id": str(n), "url": f"{base}/p{n}"}])
            assert result.ok, result.error
            assert result.body == f"ok /p{n}".encode()
    finally:
        fetcher.close()
    assert server.opened == 5


def test_more_origins_than_the_bound_never_hold_more_sockets_than_concurrency(server: _Counting) -> None:
    fetcher = _fetcher(2)
    port = server.server_port
    # each batch of six has one fetch per origin, two in flight at once
    urls = [f"http://{HOSTS[n % 6]}:{port}/q{n}" for n in range(36)]
    try:
        for start in range(0, len(urls), 6):
            batch = [{"id": url, "url": url} for url in urls[start:start + 6]]
            results = fetcher.fetch_many(batch)
            assert all(r.ok for r in results), [str(r.error) for r in results if not r.ok]
        # the server sees a socket the pool closed at its next read: wait for it to catch up
        for _ in range(50):
            if server.open <= 2:
                break
            time.sleep(0.1)
        print(f"connections opened {server.opened}, open now {server.open}")
        assert server.open <= 2, "the pool kept more sockets open than its bound"
        assert server.opened == len(urls)  # six origins cycling through a pool of two: none reused
        # and a later fetch of the same origin reuses what the pool kept
        opened = server.opened
        last = urls[-1]
        assert fetcher.fetch_many([{"id": "again", "url": last}])[0].ok
        assert server.opened == opened
    finally:
        fetcher.close()


class _DropsSecondRequest(ThreadingHTTPServer):
    """Answers the first request of each connection and closes the connection, unanswered,
    when a second one arrives on it: a server whose keep-alive timeout struck as the client
    reused the connection."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _FirstOnly)
        self.lock = threading.Lock()
        self.opened = 0
        self.asked: list[str] = []


class _FirstOnly(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _DropsSecondRequest

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def setup(self) -> None:
        super().setup()
        self.answered = 0
        with self.server.lock:
            self.server.opened += 1

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.asked.append(self.path)
        if self.answered:
            self.close_connection = True  # read, never answered
            return
        self.answered += 1
        body = b"ok " + self.path.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_a_get_on_a_kept_connection_the_server_drops_unanswered_is_sent_once_more_on_a_new_one() -> None:
    httpd = _DropsSecondRequest()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    fetcher = _fetcher(4)
    base = f"http://127.0.0.1:{httpd.server_port}"
    try:
        [first] = fetcher.fetch_many([{"id": "a", "url": f"{base}/a"}])
        [second] = fetcher.fetch_many([{"id": "b", "url": f"{base}/b"}])
    finally:
        fetcher.close()
        httpd.shutdown()
        httpd.server_close()
    assert first.ok and first.body == b"ok /a", first.error
    assert second.ok and second.body == b"ok /b", second.error
    # /b reached the kept connection (dropped there) and a new one (answered): two connections
    assert httpd.asked == ["/a", "/b", "/b"] and httpd.opened == 2
