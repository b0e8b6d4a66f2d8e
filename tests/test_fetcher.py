"""The fetch engine (workers.fetcher.Fetcher) against a real, sometimes misbehaving, local HTTP server."""

from __future__ import annotations

import gzip
import re
import resource
import socket
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest

from crawlcluster.messages import CALLBACK
from crawlcluster.netguard import AddressPolicy
from crawlcluster.schema import ROBOTS_CALLBACK
from workers.fetcher import Fetcher, FetchResult

# the address guard lets these fetches reach the local test sites only (127.0.0.1, any port)
LOCAL_SITE = AddressPolicy(allow=("127.0.0.1",))

LIMIT = 200_000
HTML = ("<!doctype html><html><head><title>Caf\u00e9</title></head>"
        "<body><a href='/x'>x</a></body></html>").encode()
PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj << /Type /Catalog >> endobj\n\x00\x01\x02\xff trailer\n%%EOF\n"
BROKEN_HTML = b"<html><body>caf\xe9 \xff\xfe\x80\x00 \xed\xa0\x80 ok</body></html>"
BIG = b"a" * 1_000_000
MB = 1024 * 1024


def _deflate(data: bytes, wbits: int) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, wbits)
    return c.compress(data) + c.flush()


def _gzip_bomb(megabytes: int) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(MB)
    return b"".join(c.compress(zeros) for _ in range(megabytes)) + c.flush()


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: dict[str, dict[str, Any]] = {}  # ?id= -> what the server saw
        self.reuse_peers: list[tuple[str, int]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.stop = threading.Event()
        self.bomb = _gzip_bomb(50)
        self.trailer_body = gzip.compress(HTML) + bytes(16 * MB)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every complete response carries Content-Length
    server: "_Server"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_GET(self) -> None:
        self._route()

    def do_POST(self) -> None:
        self._route()

    def _send(self, status: int, body: bytes, content_type: str = "text/html; charset=utf-8",
              **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def _stream_without_length(self, chunked: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Transfer-Encoding" if chunked else "Connection", "chunked" if chunked else "close")
        self.end_headers()
        self.close_connection = True
        for start in range(0, len(BIG), 16_384):
            piece = BIG[start:start + 16_384]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    def _route(self) -> None:
        state = self.server.state
        parts = urlsplit(self.path)
        path, query = parts.path, parse_qs(parts.query)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if "id" in query:
            with state.lock:
                state.requests[query["id"][0]] = {"method": self.command, "headers": self.headers,
                                                  "body": body}
        if path == "/page":
            self._send(200, HTML, ETag='"v1"', X_Not_Kept="1")
        elif path == "/set-cookie":
            self._send(200, HTML, Set_Cookie="session=leaked; Path=/")
        elif path == "/reuse":
            with state.lock:
                state.reuse_peers.append(self.client_address)
            self._send(200, b"ok", "text/plain")
        elif path == "/slow":
            with state.lock:
                state.in_flight += 1
                state.max_in_flight = max(state.max_in_flight, state.in_flight)
            time.sleep(0.5)
            with state.lock:
                state.in_flight -= 1
            self._send(200, path.encode() + b" " + query["n"][0].encode(), "text/plain")
        elif path == "/gzip":
            self._send(200, gzip.compress(HTML), Content_Encoding="gzip")
        elif path == "/deflate-zlib":
            self._send(200, _deflate(HTML, zlib.MAX_WBITS), Content_Encoding="deflate")
        elif path == "/deflate-raw":
            self._send(200, _deflate(HTML, -zlib.MAX_WBITS), Content_Encoding="deflate")
        elif path == "/big-length":
            self._send(200, BIG)
        elif path == "/big-chunked":
            self._stream_without_length(chunked=True)
        elif path == "/big-close":
            self._stream_without_length(chunked=False)
        elif path == "/bomb":
            self._send(200, state.bomb, Content_Encoding="gzip")
        elif path == "/gzip-trailer":
            self._send(200, state.trailer_body, Content_Encoding="gzip")
        elif path == "/bad-gzip":
            self._send(200, b"this is plain text, not gzip data at all", Content_Encoding="gzip")
        elif path == "/br":
            self._send(200, b"\x1b\x2f\x00\xf8\x1d\x09\x00\x00", Content_Encoding="br")
        elif path.startswith("/status/"):
            self._send(int(path.rsplit("/", 1)[1]), b"<html>error page</html>")
        elif path.startswith("/dir/redirect/"):
            code = path.rsplit("/", 1)[1]
            self._send(int(code), b"<html>moved</html>", Location=f"../landing?from={code}")
        elif path == "/hang":
            state.stop.wait(10)  # accept, read the request, never answer
            self.close_connection = True
        elif path == "/dribble":
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 100000\r\n\r\n")
            self.close_connection = True
            for _ in range(300):  # 1 byte / 0.05 s: never idle long enough for the read timeout
                if state.stop.wait(0.05):
                    return
                self.wfile.write(b"x")
        elif path == "/cut":
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/ht")
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
        elif path == "/pdf":
            self._send(200, PDF, "application/pdf")
        elif path == "/binary-html":
            self._send(200, BROKEN_HTML)
        else:
            self._send(404, b"no route")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # 32+ connections arrive at once

    def __init__(self) -> None:
        self.state = _State()
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # the client hanging up on a big, slow or endless body is expected here


@pytest.fixture(scope="module")
def server() -> Iterator[_Server]:
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield srv
    srv.state.stop.set()
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def base(server: _Server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def _new_fetcher() -> Fetcher:
    return Fetcher(user_agent="crawlcluster-test/1", connect_timeout_seconds=2, read_timeout_seconds=1,
                   max_body_bytes=LIMIT, concurrency=32,
                   policy=LOCAL_SITE)


@pytest.fixture(scope="module")
def fetcher(server: _Server) -> Iterator[Fetcher]:
    f = _new_fetcher()
    yield f
    f.close()


def fetch_one(fetcher: Fetcher, url: str, **options: Any) -> FetchResult:
    entry: dict[str, Any] = {"id": url, "url": url}
    if options:
        entry["fetch"] = options
    [result] = fetcher.fetch_many([entry])
    assert result.entry is entry
    return result


def _peak_rss_kb(reset: bool = False) -> int:
    """Peak RSS of this process; with ``reset`` the Linux high-water mark is first lowered to now."""
    try:
        if reset:
            Path("/proc/self/clear_refs").write_text("5")
        return int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))
    except (OSError, AttributeError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _assert_error(result: FetchResult, kinds: set[str], url: str) -> None:
    assert result.error is not None, f"expected an error of kind {kinds}, got status {result.status}"
    assert result.error.kind in kinds, f"kind {result.error.kind!r}: {result.error}"
    assert not result.ok and result.body == b""
    assert result.error.url == url
    assert url in str(result.error), str(result.error)


# -- successful fetches ----------------------------------------------------------------

def test_html_page_returns_status_exact_body_and_only_kept_headers(fetcher: Fetcher, base: str) -> None:
    result = fetch_one(fetcher, f"{base}/page")
    assert result.ok and result.error is None
    assert result.status == 200
    assert result.body == HTML
    assert result.headers == {"content-type": "text/html; charset=utf-8", "etag": '"v1"'}
    assert result.redirect_to is None
    assert result.wire_bytes == len(HTML)


def test_user_agent_and_per_request_headers_and_cookies_reach_the_server(
        fetcher: Fetcher, base: str, server: _Server) -> None:
    result = fetch_one(fetcher, f"{base}/page?id=headers",
                       headers={"X-Project": "demo", "Accept-Language": "fr"},
                       cookies={"session": "abc123", "lang": "fr"})
    assert result.ok, result.error
    seen = server.state.requests["headers"]
    assert seen["method"] == "GET"
    assert seen["headers"]["User-Agent"] == "crawlcluster-test/1"
    assert seen["headers"]["X-Project"] == "demo"
    assert seen["headers"]["Accept-Language"] == "fr"
    assert seen["headers"]["Cookie"] == "session=abc123; lang=fr"


def test_post_sends_its_method_and_exact_body_to_the_server(fetcher: Fetcher, base: str,
                                                            server: _Server) -> None:
    payload = b"q=crawl&page=2&raw=\x00\xff"
    result = fetch_one(fetcher, f"{base}/page?id=post", method="POST", body=payload,
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert result.ok, result.error
    assert result.body == HTML
    seen = server.state.requests["post"]
    assert seen["method"] == "POST"
    assert seen["body"] == payload
    assert seen["headers"]["Content-Type"] == "application/x-www-form-urlencoded"


def test_cookies_set_by_a_response_are_never_sent_on_later_requests(
        fetcher: Fetcher, base: str, server: _Server) -> None:
    assert fetch_one(fetcher, f"{base}/set-cookie?id=setter").ok
    assert fetch_one(fetcher, f"{base}/page?id=after-set-cookie").ok
    assert "Cookie" not in server.state.requests["after-set-cookie"]["headers"]


def test_sequential_fetches_of_one_host_reuse_a_keep_alive_connection(base: str, server: _Server) -> None:
    fresh = _new_fetcher()  # its own pool, so earlier tests' connections do not count
    try:
        for i in range(20):
            result = fetch_one(fresh, f"{base}/reuse?n={i}")
            assert result.ok and result.body == b"ok", result.error
    finally:
        fresh.close()
    connections = set(server.state.reuse_peers)
    assert len(server.state.reuse_peers) == 20
    assert len(connections) < 20
    assert len(connections) == 1, f"20 sequential requests used {len(connections)} TCP connections"


def test_fetch_many_keeps_concurrency_requests_in_flight_and_returns_results_in_order(
        fetcher: Fetcher, base: str, server: _Server) -> None:
    entries = [{"id": f"slow-{n}", "url": f"{base}/slow?n={n}"} for n in range(64)]
    results = fetcher.fetch_many(entries)
    assert [r.entry["id"] for r in results] == [e["id"] for e in entries]
    assert all(r.ok for r in results), [str(r.error) for r in results if not r.ok]
    assert [r.body for r in results] == [f"/slow {n}".encode() for n in range(64)]
    assert server.state.max_in_flight >= 32
    assert server.state.max_in_flight <= 32, "more requests in flight than the configured concurrency"


def test_empty_batch_returns_no_results(fetcher: Fetcher) -> None:
    assert fetcher.fetch_many([]) == []


@pytest.mark.parametrize("path", ["/gzip", "/deflate-zlib", "/deflate-raw"])
def test_gzip_and_deflate_encoded_bodies_are_decoded(fetcher: Fetcher, base: str, path: str) -> None:
    result = fetch_one(fetcher, base + path)
    assert result.ok, result.error
    assert result.body == HTML
    assert 0 < result.wire_bytes != len(HTML)  # the compressed size went over the wire


def test_pdf_body_is_returned_untouched_with_its_content_type(fetcher: Fetcher, base: str) -> None:
    result = fetch_one(fetcher, f"{base}/pdf")
    assert result.ok, result.error
    assert result.body == PDF
    assert result.headers["content-type"] == "application/pdf"


def test_undecodable_bytes_in_an_html_body_are_returned_as_raw_bytes(fetcher: Fetcher, base: str) -> None:
    result = fetch_one(fetcher, f"{base}/binary-html")
    assert result.ok, result.error
    assert isinstance(result.body, bytes)
    assert result.body == BROKEN_HTML


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_redirect_gives_an_absolute_redirect_to_and_no_body(fetcher: Fetcher, base: str, code: int) -> None:
    result = fetch_one(fetcher, f"{base}/dir/redirect/{code}")
    assert result.ok, result.error
    assert result.status == code
    assert result.redirect_to == f"{base}/dir/landing?from={code}"
    assert result.headers["location"] == f"../landing?from={code}"
    assert result.body == b""


# -- oversized and badly encoded bodies ------------------------------------------------

def test_body_over_the_limit_with_content_length_is_body_too_large_and_kept_nowhere(
        fetcher: Fetcher, base: str) -> None:
    url = f"{base}/big-length"
    result = fetch_one(fetcher, url)
    _assert_error(result, {"body_too_large"}, url)
    assert f"max_body_bytes={LIMIT}" in str(result.error)
    assert "CRAWLCLUSTER_MAX_BODY_BYTES" in str(result.error)  # says what to do
    assert result.status == 200 and result.error.status_code == 200


@pytest.mark.parametrize("path", ["/big-chunked", "/big-close"])
def test_body_over_the_limit_without_content_length_is_body_too_large(fetcher: Fetcher, base: str,
                                                                      path: str) -> None:
    url = base + path
    result = fetch_one(fetcher, url)
    _assert_error(result, {"body_too_large"}, url)
    assert "CRAWLCLUSTER_MAX_BODY_BYTES" in str(result.error)


def test_gzip_bomb_is_body_too_large_without_inflating_memory(fetcher: Fetcher, base: str,
                                                              server: _Server) -> None:
    assert len(server.state.bomb) < 200_000  # 50 MB of zeros, small on the wire
    url = f"{base}/bomb"
    before = _peak_rss_kb(reset=True)
    result = fetch_one(fetcher, url)
    grown_mb = (_peak_rss_kb() - before) / 1024
    _assert_error(result, {"body_too_large"}, url)
    assert "after decompression" in str(result.error)
    assert grown_mb < 30, f"peak RSS grew by {grown_mb:.0f} MB while refusing a 50 MB gzip bomb"


def test_bytes_after_the_end_of_a_gzip_stream_are_not_buffered_without_bound(
        fetcher: Fetcher, base: str, server: _Server) -> None:
    # a valid gzip member followed by 16 MB of trailing junk: whatever the verdict, the engine
    # must not hold the junk in memory (the module promises nothing beyond max_body_bytes)
    url = f"{base}/gzip-trailer"
    before = _peak_rss_kb(reset=True)
    result = fetch_one(fetcher, url)
    grown_mb = (_peak_rss_kb() - before) / 1024
    if not result.ok:
        _assert_error(result, {"decode", "body_too_large"}, url)
    else:
        assert result.body == HTML
    assert grown_mb < 8, f"peak RSS grew by {grown_mb:.0f} MB for a {LIMIT}-byte limit"


def test_invalid_gzip_data_is_a_decode_error(fetcher: Fetcher, base: str) -> None:
    url = f"{base}/bad-gzip"
    _assert_error(fetch_one(fetcher, url), {"decode"}, url)


def test_unsupported_content_encoding_is_a_decode_error_naming_the_encoding(fetcher: Fetcher,
                                                                            base: str) -> None:
    url = f"{base}/br"
    result = fetch_one(fetcher, url)
    _assert_error(result, {"decode"}, url)
    assert "'br'" in str(result.error)


# -- HTTP errors and misbehaving servers -----------------------------------------------

@pytest.mark.parametrize("code", [404, 503])
def test_error_status_is_an_http_error_carrying_the_status_code(fetcher: Fetcher, base: str,
                                                                code: int) -> None:
    result = fetch_one(fetcher, f"{base}/status/{code}")
    assert result.error is not None and result.error.kind == "http"
    assert result.status == code and result.error.status_code == code
    assert f"HTTP {code}" in str(result.error)
    assert result.body == b""


def test_server_that_never_answers_is_a_read_timeout(fetcher: Fetcher, base: str) -> None:
    url = f"{base}/hang"
    result = fetch_one(fetcher, url)
    _assert_error(result, {"timeout"}, url)
    assert "reading" in str(result.error)  # the 1 s read timeout, not the total one


def test_server_that_dribbles_bytes_forever_ends_in_the_total_timeout(fetcher: Fetcher, base: str) -> None:
    url = f"{base}/dribble"
    result = fetch_one(fetcher, url)
    _assert_error(result, {"timeout"}, url)
    assert "in total" in str(result.error)


def test_refused_connection_is_a_connect_error(fetcher: Fetcher) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/page"
    _assert_error(fetch_one(fetcher, url), {"connect"}, url)


def test_connection_closed_mid_headers_is_a_protocol_or_network_error(fetcher: Fetcher, base: str) -> None:
    url = f"{base}/cut"
    _assert_error(fetch_one(fetcher, url), {"protocol", "network"}, url)


def test_invalid_urls_give_error_results_and_leave_the_rest_of_the_batch_intact(
        fetcher: Fetcher, base: str) -> None:
    bad = ["http://", "ftp://x/", "not a url"]
    entries = [{"id": "good-1", "url": f"{base}/page"}]
    entries += [{"id": f"bad-{i}", "url": url} for i, url in enumerate(bad)]
    entries += [{"id": "good-2", "url": f"{base}/pdf"}]
    results = fetcher.fetch_many(entries)  # must not raise
    assert [r.entry["id"] for r in results] == [e["id"] for e in entries]
    assert results[0].ok and results[0].body == HTML
    assert results[-1].ok and results[-1].body == PDF
    for result, url in zip(results[1:-1], bad):
        assert result.error is not None, url
        assert result.error.kind == "invalid_url", f"{url!r}: {result.error.kind} {result.error}"
        assert url in str(result.error)
        assert result.status is None and result.body == b""


@pytest.mark.parametrize("path", ["/big-length", "/big-chunked", "/bomb"])
def test_a_robots_txt_over_the_body_limit_is_cut_at_max_robots_bytes_not_failed(server: _Server,
                                                                               base: str, path: str) -> None:
    """A robots.txt is read up to max_robots_bytes and the rest dropped, whatever its size or
    encoding: failing it would leave its host unreachable for every project."""
    robots = Fetcher(user_agent="crawlcluster-test/1", connect_timeout_seconds=2, read_timeout_seconds=1,
                     max_body_bytes=LIMIT, concurrency=4, policy=LOCAL_SITE, max_robots_bytes=1000)
    try:
        page, robots_txt = robots.fetch_many([{"id": "p", "url": base + path},
                                              {"id": "r", "url": base + path, CALLBACK: ROBOTS_CALLBACK}])
    finally:
        robots.close()
    assert page.error is not None and page.error.kind == "body_too_large"  # a page is still refused
    assert robots_txt.ok and robots_txt.status == 200
    assert len(robots_txt.body) == 1001  # one byte past the bound: the parse stage cuts at a line's end
    assert robots_txt.wire_bytes < LIMIT  # reading stopped early
