"""Final errors are final, and what a server asks is capped: broken HTTP and failed TLS end
a row at once with the reason, a reset says why, Retry-After and Crawl-delay are capped,
a 5 MB robots.txt is cut and parsed once, a 1 MB URL leaves a bounded error. Against
local servers that log every request they got (tests/hostile_servers.py)."""

from __future__ import annotations

import logging
import resource
import time
from pathlib import Path
from typing import Iterator

import pytest
from protego import Protego
from sqlalchemy import create_engine, select

from crawlcluster import settings
from crawlcluster.dispatch import robots as robots_module
from crawlcluster.error_text import bounded_error
from crawlcluster.errors import InvalidURL
from crawlcluster.netguard import AddressPolicy
from crawlcluster.schema import hosts
from tests.hostile_servers import RawServer, TlsServer, reset, send
from tests.outcomes import load_rows
from workers.fetch_errors import is_retryable, parse_retry_after
from workers.fetcher import Fetcher

ILLEGAL_STATUS = b"HTTP/1.1 abc OK\r\n\r\n"
LONG_HEADERS = b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 200_000 + b"\r\n\r\n"
TWO_LENGTHS = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello"


def _reset_mid_body(_path: str, conn) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
    time.sleep(0.1)
    reset(conn)


@pytest.fixture
def fetcher() -> Iterator[Fetcher]:
    engine = Fetcher(user_agent="test", connect_timeout_seconds=5, read_timeout_seconds=5,
                     max_body_bytes=1_000_000, concurrency=8,
                     policy=AddressPolicy(allow=("127.0.0.1",)))  # the guard lets in the local servers
    yield engine
    engine.close()


def test_broken_http_and_failed_tls_are_final_and_name_their_reason(fetcher: Fetcher, tmp_path: Path) -> None:
    raw = {name: RawServer(send(answer)) for name, answer in
           (("illegal status line", ILLEGAL_STATUS), ("response headers too long", LONG_HEADERS),
            ("conflicting Content-Length", TWO_LENGTHS))}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    self_signed = TlsServer(tmp_path / "a")
    old_tls = TlsServer(tmp_path / "b", old_tls=True)
    try:
        entries = [{"id": name, "url": server.url + "/page"} for name, server in raw.items()]
        entries += [{"id": "certificate", "url": self_signed.url + "/"},
                    {"id": "tls", "url": old_tls.url + "/"}]
        results = {r.entry["id"]: r for r in fetcher.fetch_many(entries)}  # type: ignore[arg-type]
        for name, server in raw.items():
            error = results[name].error
            assert error is not None and error.kind == "protocol", (name, error)
            assert name in str(error) and "not retried" in str(error)
            assert not is_retryable(error.kind, error.status_code)
            assert server.requests() == 1
        certificate = results["certificate"].error
        assert certificate is not None and certificate.kind == "certificate"
        assert "CERTIFICATE_VERIFY_FAILED" in str(certificate) and "self-signed" in str(certificate)
        tls = results["tls"].error
        assert tls is not None and tls.kind == "tls" and "PROTOCOL_VERSION" in str(tls), tls
        assert not is_retryable("certificate", None) and not is_retryable("tls", None)
        assert self_signed.connections == 1 and old_tls.connections == 1
        for name, result in results.items():
            print(f"{name}: {result.error}")
    finally:
        for server in raw.values():
            server.stop()
        self_signed.stop()
        old_tls.stop()


def test_a_connection_that_breaks_is_retried_and_says_why(fetcher: Fetcher) -> None:
    resets = RawServer(_reset_mid_body)
    short = RawServer(send(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nhello"))
    try:
        results = fetcher.fetch_many([{"id": "reset", "url": resets.url + "/"},  # type: ignore[list-item]
                                      {"id": "short", "url": short.url + "/"}])
        reset_error, short_error = results[0].error, results[1].error
        assert reset_error is not None and reset_error.kind == "network"
        assert str(reset_error).endswith("Connection reset by peer"), reset_error
        assert short_error is not None and short_error.kind == "network"
        assert "peer closed connection without sending complete message body" in str(short_error)
        assert is_retryable("network", None)
    finally:
        resets.stop()
        short.stop()


def test_retry_after_is_finite_and_never_negative() -> None:
    now = 1_000_000.0
    assert parse_retry_after("999999999", now) == 999_999_999
    assert parse_retry_after("9" * 400, now) == 1e9  # not inf
    assert parse_retry_after("9" * 5000, now) == 1e9  # beyond int()'s digit limit
    assert parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now) == 1e9
    assert parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT", now) == 0
    for garbage in ("-5", "soon", "1.5", "\u00b2", "inf", "nan", "", None):
        assert parse_retry_after(garbage, now) is None, garbage


def test_an_error_text_is_bounded_and_its_urls_shortened() -> None:
    url = "http://example.test/" + "a" * 1_000_000
    text = bounded_error(f"broken HTTP from {url} (illegal status line)", 2000)
    assert text is not None and len(text) < 300 and "characters cut" in text
    assert text.endswith("(illegal status line)")
    long = bounded_error("word " * 10_000, 2000)
    assert long is not None and len(long) <= 2000 and "characters cut" in long


def _robots_txt(total_bytes: int) -> bytes:
    """A robots.txt of ``total_bytes``: Crawl-delay 86400 and a disallowed /private first,
    then filler, then (past max_robots_bytes) a Disallow of /late that is never read."""
    head = b"User-agent: *\nCrawl-delay: 86400\nDisallow: /private\n"
    tail = b"Disallow: /late\n"
    line = b"Disallow: /filler/%07d\n"
    body = [head]
    size = len(head) + len(tail)
    index = 0
    while size < total_bytes:
        body.append(line % index)
        size += len(body[-1])
        index += 1
    return b"".join(body) + tail


def test_one_crawl_of_hostile_servers_ends_by_itself_with_every_cap_said(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The end-to-end check (embedded crawl): broken HTTP, a self-signed certificate and a
    reset, Retry-After 999999999, Crawl-delay 86400 in a 5 MB robots.txt, a 1 MB URL."""
    from crawlcluster.embedded import run_embedded

    robots = _robots_txt(5 * 1024 * 1024)
    pages = ["/", "/late", "/private"] + [f"/p{i}" for i in range(6)]
    links = "".join(f"<a href='{p}'>{p}</a>" for p in pages)

    def site(path: str, conn) -> None:
        body = f"<html><head><title>{path}</title></head><body>{links}</body></html>".encode()
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n"
                     b"Connection: close\r\n\r\n%s" % (len(body), body))

    def robots_answer(_path: str, conn) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                     b"Connection: close\r\n\r\n" % len(robots) + robots)

    polite = RawServer(site, robots=robots_answer)
    broken = RawServer(send(ILLEGAL_STATUS))
    resets = RawServer(_reset_mid_body)
    busy = RawServer(send(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 999999999\r\n"
                          b"Content-Length: 0\r\nConnection: close\r\n\r\n"))
    certificate = TlsServer(tmp_path)
    huge_url = broken.url + "/" + "u" * 1_000_000
    caplog.set_level(logging.INFO, logger="crawlcluster")
    settings.configure(max_crawl_delay_seconds=1, retry_after_max_seconds=1, retry_delays=[0.5])
    parses_before = robots_module.PARSES
    started = time.monotonic()
    try:
        result = run_embedded([polite.url + "/", broken.url + "/page", resets.url + "/", busy.url + "/",
                               certificate.url + "/"], project="hostile", progress=False,
                              database_path=str(tmp_path / "crawl.db"), timeout_seconds=120)
        elapsed = time.monotonic() - started
        tasks, _items = load_rows(f"sqlite:///{tmp_path / 'crawl.db'}", "hostile")
        by_url = {t["url"]: t for t in tasks}

        # broken HTTP: one request, failed at once with the reason
        page = by_url[broken.url + "/page"]
        assert page["status"] == "failed" and page["error_kind"] == "protocol"
        assert "illegal status line" in page["error"]
        assert broken.requests("/page") == 1
        # the 1 MB URL: refused when submitted, in a sentence that quotes 200 characters of it
        with pytest.raises(InvalidURL) as refused:
            run_embedded([huge_url], project="hostile-url", progress=False,
                         database_path=str(tmp_path / "url.db"), timeout_seconds=30)
        assert len(str(refused.value)) <= 400 and "1,000,023 characters" in str(refused.value)
        assert broken.requests(huge_url[len(broken.url):]) == 0
        # a self-signed certificate: its robots.txt failed for good, one connection, the host's rows fail
        tls_row = by_url[certificate.url + "/"]
        assert tls_row["status"] == "failed" and tls_row["error_kind"] == "robots"
        assert "CERTIFICATE_VERIFY_FAILED" in tls_row["error"] and "after 1 attempt (" in tls_row["error"]
        assert certificate.connections == 1
        # a reset mid-body: retried (1 + 2 tries), and the error says why
        reset_row = by_url[resets.url + "/"]
        assert reset_row["status"] == "failed" and "Connection reset by peer" in reset_row["error"]
        assert resets.requests("/") == 3
        # Retry-After 999999999: capped to 1 s, said in the row; 3 tries, not 31.7 years
        busy_row = by_url[busy.url + "/"]
        assert busy_row["status"] == "failed" and busy_row["status_code"] == 503
        assert busy.requests("/") == 3
        # each retry's error said so (the last try's error is the plain 503), and the log
        assert "Retry-After 999999999 s capped to 1 s (retry_after_max_seconds)" in caplog.text
        assert "Crawl-delay 86400 s capped to 1 s (max_crawl_delay_seconds)" in caplog.text
        assert result.pages["failed"] >= 4

        # the 5 MB robots.txt: cut to max_robots_bytes, parsed once by the scheduler, its
        # Crawl-delay capped to 1 s; /private (in the kept part) disallowed, /late (past it) fetched
        engine = create_engine(f"sqlite:///{tmp_path / 'crawl.db'}")
        with engine.connect() as conn:
            host = conn.execute(select(hosts).where(hosts.c.host == f"127.0.0.1:{polite.port}")).one()
        engine.dispose()
        limit = settings.current().max_robots_bytes
        assert len(host.robots_body.encode()) <= limit
        assert host.crawl_delay == 1
        assert "Crawl-delay 86400 s capped to 1 s (max_crawl_delay_seconds)" in host.robots_note
        # the fetcher stopped reading one byte past the bound
        assert f"robots.txt over max_robots_bytes ({limit + 1:,} bytes or more)" in host.robots_note
        assert by_url[polite.url + "/private"]["status"] == "disallowed"
        assert polite.requests("/late") == 1 and polite.requests("/private") == 0
        assert polite.requests("/robots.txt") == 1
        assert robots_module.PARSES - parses_before == 1
        start = time.perf_counter()
        Protego.parse(host.robots_body)
        parse_kept = time.perf_counter() - start
        start = time.perf_counter()
        Protego.parse(robots.decode())
        parse_whole = time.perf_counter() - start
        print(f"\nhostile crawl: {len(tasks)} rows in {elapsed:.1f} s; robots.txt {len(robots):,} bytes "
              f"stored as {len(host.robots_body):,}; parses by the scheduler: "
              f"{robots_module.PARSES - parses_before}; one parse of the kept part "
              f"{parse_kept * 1000:.0f} ms, "
              f"of the whole {parse_whole * 1000:.0f} ms; max RSS "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
        for row in sorted(tasks, key=lambda t: t["url"]):
            print(f"  {row['status']:10} {row['url'][:60]:60} {(row['error'] or '')[:160]}")
    finally:
        for server in (polite, broken, resets, busy):
            server.stop()
        certificate.stop()
