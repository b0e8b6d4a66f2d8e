"""Tests for the deterministic demo site: its served behaviour matches its ground truth."""

from __future__ import annotations

import collections
import http.client
import re
import threading
import time
from collections import deque
from html.parser import HTMLParser
from urllib.parse import parse_qsl, urljoin, urlsplit

import pytest

from crawlcluster.devtools.demo_site import DemoSite
from crawlcluster.devtools.site_server import SiteServer


@pytest.fixture(scope="module")
def site() -> DemoSite:
    return DemoSite()


@pytest.fixture()
def server(site: DemoSite):
    with site.serve() as srv:
        yield srv


class _LinkParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.hrefs: list[str] = []
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            href = dict(attrs).get("href")
            if href is not None:
                self.hrefs.append(href)
        elif tag == "title":
            self._in_title = True

    def handle_endtag(self, tag):
        if tag == "title":
            self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.title += data


def _decode(body: bytes, content_type: str) -> str:
    m = re.search(r"charset=([\w-]+)", content_type) or re.search(rb'<meta charset="([\w-]+)"', body[:1024])
    charset = m.group(1) if m else "utf-8"
    return body.decode(charset.decode() if isinstance(charset, bytes) else charset)


def _parse(body: bytes, content_type: str) -> _LinkParser:
    parser = _LinkParser()
    parser.feed(_decode(body, content_type))
    parser.close()
    return parser


class _Client:
    """A keep-alive client that never follows redirects."""

    def __init__(self, srv: SiteServer) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)

    def get(self, target: str, method: str = "GET") -> tuple[int, http.client.HTTPMessage, bytes]:
        self.conn.request(method, target)
        resp = self.conn.getresponse()
        return resp.status, resp.headers, resp.read()

    def close(self) -> None:
        self.conn.close()


@pytest.fixture()
def client(server: SiteServer):
    c = _Client(server)
    yield c
    c.close()


def _normalise(href: str, page_url: str, netloc: str) -> str | None:
    """Reference normaliser: the canonical target on our site, or None to drop the link."""
    url = urljoin(page_url, href)
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        return None  # mailto:, javascript:, tel:
    host = parts.netloc.lower()
    if host.endswith(":80") and parts.scheme.lower() == "http":
        host = host[:-3]
    if host != netloc:
        return None  # off-site
    query = "&".join(f"{k}={v}" for k, v in sorted(parse_qsl(parts.query, keep_blank_values=True)))
    return (parts.path or "/") + (f"?{query}" if query else "")


def _bfs(srv: SiteServer, depths: dict[str, int] | None = None
         ) -> tuple[dict[str, int], dict[str, str], set[str]]:
    """Crawl from "/" with the reference normaliser; returns statuses, titles, off-site links
    (and fills ``depths`` with each target's link depth when given)."""
    netloc = f"127.0.0.1:{srv.port}"
    client = _Client(srv)
    depth = {"/": 0}
    seen = {"/"}
    queue = deque(["/"])
    statuses: dict[str, int] = {}
    titles: dict[str, str] = {}
    offsite: set[str] = set()
    try:
        while queue:
            target = queue.popleft()
            status, headers, body = client.get(target)
            statuses[target] = status
            page_url = srv.url + target
            found: list[str] = []
            if status in (301, 302):
                found.append(headers["Location"])
            elif status == 200 and headers.get_content_type() == "text/html":
                parsed = _parse(body, headers["Content-Type"])
                titles[target] = parsed.title
                found.extend(parsed.hrefs)
            for href in found:
                nxt = _normalise(href, page_url, netloc)
                if nxt is None:
                    absolute = urljoin(page_url, href)
                    if urlsplit(absolute).scheme in ("http", "https"):
                        offsite.add(absolute)
                    continue
                if nxt not in seen:
                    seen.add(nxt)
                    depth[nxt] = depth[target] + 1
                    queue.append(nxt)
    finally:
        client.close()
    if depths is not None:
        depths.update(depth)
    return statuses, titles, offsite


def test_page_title_is_page_number(client: _Client) -> None:
    status, headers, body = client.get("/page/5")
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    parsed = _parse(body, headers["Content-Type"])
    assert parsed.title == "Page 5"
    assert b'<meta name="description" content="Description of page 5">' in body
    assert b'<link rel="canonical" href="/page/5">' in body
    assert 2000 <= len(body) <= 6000


def test_query_page_title_uses_sorted_query(client: _Client, site: DemoSite) -> None:
    assert site.html_pages["/page/3?a=1&b=2"] == "Page 3 (a=1&b=2)"
    for target in ("/page/3?a=1&b=2", "/page/3?b=2&a=1"):
        status, headers, body = client.get(target)
        assert status == 200
        assert _parse(body, headers["Content-Type"]).title == "Page 3 (a=1&b=2)"


def test_meta_charset_page_is_latin1_without_header_charset(client: _Client, site: DemoSite) -> None:
    target, title = site.meta_charset_page
    assert site.html_pages[target] == title == "Café Crème Brûlée à la Française"
    status, headers, body = client.get(target)
    assert status == 200
    assert headers["Content-Type"] == "text/html"
    assert b'<meta charset="iso-8859-1">' in body
    assert "Café".encode("latin-1") in body
    with pytest.raises(UnicodeDecodeError):
        body.decode("utf-8")
    assert _parse(body, headers["Content-Type"]).title == title


def test_redirect_chain_uses_absolute_path_locations(client: _Client, site: DemoSite) -> None:
    chain = site.redirect_chain
    assert chain == ["/redirect/1", "/redirect/2", "/redirect/3"]
    for here, there in zip(chain, chain[1:] + ["/chain-end"]):
        status, headers, _ = client.get(here)
        assert status in (301, 302)
        assert headers["Location"] == there
    status, headers, body = client.get("/chain-end")
    assert status == 200
    assert _parse(body, headers["Content-Type"]).title == site.html_pages["/chain-end"]


def test_redirect_loop_bounces_forever(client: _Client, site: DemoSite) -> None:
    assert site.redirect_loop == ["/loop/a", "/loop/b"]
    for here, there in (("/loop/a", "/loop/b"), ("/loop/b", "/loop/a"), ("/loop/a", "/loop/b")):
        status, headers, _ = client.get(here)
        assert status == 302 and headers["Location"] == there


def test_not_found_targets_answer_404(client: _Client, site: DemoSite) -> None:
    assert len(site.not_found) >= 3
    for target in sorted(site.not_found) + ["/no/such/thing"]:
        assert client.get(target)[0] == 404


def test_non_html_targets_have_their_content_types(client: _Client, site: DemoSite) -> None:
    assert site.non_html == {"/files/report.pdf": "application/pdf", "/files/data.csv": "text/csv"}
    for target, ctype in site.non_html.items():
        status, headers, body = client.get(target)
        assert status == 200
        assert headers["Content-Type"] == ctype
        assert int(headers["Content-Length"]) == len(body)
    body = client.get("/files/report.pdf")[2]
    assert body.startswith(b"%PDF-1.4") and len(body) > 2000 and b"<html" not in body


def test_hits_count_every_request_target_exactly(client: _Client, server: SiteServer) -> None:
    for target in ("/page/1", "/page/2", "/page/1", "/missing/1", "/page/3?b=2&a=1"):
        client.get(target)
    client.get("/page/9", method="HEAD")
    assert server.hits() == collections.Counter(
        {"/page/1": 2, "/page/2": 1, "/missing/1": 1, "/page/3?b=2&a=1": 1, "/page/9": 1}
    )
    log = server.hit_log()
    assert [t for _, t in log] == ["/page/1", "/page/2", "/page/1", "/missing/1", "/page/3?b=2&a=1",
                                   "/page/9"]
    assert all(a <= b for (a, _), (b, _) in zip(log, log[1:]))
    server.reset_hits()
    assert server.hits() == collections.Counter() and server.hit_log() == []


def test_head_sends_length_but_no_body(client: _Client) -> None:
    status, headers, body = client.get("/page/4", method="HEAD")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 2000
    assert client.get("/page/4")[0] == 200  # the keep-alive connection is still in sync


def test_reachable_covers_pages_and_redirect_targets(site: DemoSite) -> None:
    reachable = site.reachable()
    assert set(site.html_pages) <= reachable
    assert set(site.redirect_chain) | set(site.redirect_loop) | {"/chain-end"} <= reachable
    assert site.not_found <= reachable and set(site.non_html) <= reachable
    assert sum(1 for t in site.html_pages if t.startswith("/page/")) >= 300
    assert len(site.html_pages) > 300


def test_bfs_with_reference_normaliser_finds_exactly_the_ground_truth(server: SiteServer,
                                                                      site: DemoSite) -> None:
    statuses, titles, offsite = _bfs(server)
    assert set(statuses) == site.reachable()
    assert titles == site.html_pages
    assert {t for t, s in statuses.items() if s == 404} == site.not_found
    assert {t for t, s in statuses.items() if s in (301, 302)} == \
        set(site.redirect_chain) | set(site.redirect_loop)
    assert offsite == site.offsite_urls
    # the BFS fetched each target once, and nothing off the map
    assert server.hits() == collections.Counter({t: 1 for t in site.reachable()})


def test_pages_are_shallow_from_home(server: SiteServer, site: DemoSite) -> None:
    depths: dict[str, int] = {}
    _bfs(server, depths)
    assert all(depths[f"/page/{n}"] == 1 for n in range(10))
    # "/" links /page/0..9 and the tree halves the rest, so depth stays near log2(pages)
    assert max(depths[t] for t in site.html_pages) <= 9


def test_links_contain_duplicates_and_variants(client: _Client, server: SiteServer) -> None:
    _, headers, body = client.get("/page/7")
    hrefs = _parse(body, headers["Content-Type"]).hrefs
    assert len(hrefs) > len(set(hrefs))  # the same target more than once
    _, _, root = client.get("/")
    for variant in (b'href="/page/3?b=2&amp;a=1"', b'href="/page/3?a=1&amp;b=2#x"', b'href="mailto:', b"<a>"):
        assert variant in root
    bodies = b"".join(client.get(f"/page/{n}")[2] for n in range(14))
    for form in (b'href="./', b'href="../page/', b"#section-",
                 f'href="HTTP://127.0.0.1:{server.port}/'.encode()):
        assert form in bodies


def test_page_7_has_broken_markup_but_title_and_links(client: _Client) -> None:
    _, headers, body = client.get("/page/7")
    text = body.decode()
    assert text.count("<div") > text.count("</div>")
    assert text.count("<p>") > text.count("</p>")
    parsed = _parse(body, headers["Content-Type"])
    assert parsed.title == "Page 7" and "/page/15" in parsed.hrefs


def test_site_is_deterministic_for_a_seed() -> None:
    a, b, c = DemoSite(seed=7), DemoSite(seed=7), DemoSite(seed=8)
    assert a.html_pages == b.html_pages and a.reachable() == b.reachable()
    assert a.respond("/page/42", "127.0.0.1", 1234) == b.respond("/page/42", "127.0.0.1", 1234)
    assert a.respond("/page/42", "127.0.0.1", 1234) != c.respond("/page/42", "127.0.0.1", 1234)


def test_default_port_variant_only_on_port_80(site: DemoSite) -> None:
    on_80 = site.respond("/page/5", "127.0.0.1", 80).body
    elsewhere = site.respond("/page/5", "127.0.0.1", 8080).body
    assert b'href="http://127.0.0.1:80/page/' in on_80
    assert b":80/page/" not in elsewhere


def test_friendly_site_has_no_traps() -> None:
    plain = DemoSite(pages=40, traps=False)
    assert plain.not_found == set() and plain.redirect_chain == [] and plain.redirect_loop == []
    assert plain.offsite_urls == set()
    assert set(plain.html_pages) == {"/"} | {f"/page/{n}" for n in range(40)}
    with plain.serve() as srv:
        statuses, titles, offsite = _bfs(srv)
    assert set(statuses) == plain.reachable()
    assert set(statuses.values()) == {200}
    assert titles == plain.html_pages and offsite == set()
    assert set(plain.non_html) <= set(statuses)


def test_serves_many_concurrent_keep_alive_clients(server: SiteServer) -> None:
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        client = _Client(server)
        try:
            for i in range(25):
                status, _, body = client.get(f"/page/{(k * 25 + i) % 300}")
                assert status == 200 and body
        except BaseException as exc:  # surfaced below; threads cannot fail the test directly
            errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(24)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert sum(server.hits().values()) == 24 * 25
    assert time.monotonic() - started < 10


def test_stop_is_idempotent_and_does_not_wait_for_idle_connections(site: DemoSite) -> None:
    srv = site.serve()
    assert srv.url == f"http://127.0.0.1:{srv.port}" and srv.port > 0 and srv.site is site
    idle = _Client(srv)
    assert idle.get("/")[0] == 200  # leaves an open keep-alive connection
    started = time.monotonic()
    srv.stop()
    srv.stop()
    assert time.monotonic() - started < 3
    idle.close()
    with pytest.raises(OSError):
        http.client.HTTPConnection("127.0.0.1", srv.port, timeout=2).request("GET", "/")


# -- retry traps and clients that hang up ------------------------------------------------

def test_retry_traps_are_off_by_default_so_exact_counts_stay_exact(site: DemoSite) -> None:
    assert not site.retry_traps and site.flaky == {} and site.server_errors == set() and site.slow_pages == {}
    assert not {"/flaky", "/broken", "/slow"} & site.reachable()


def test_retry_traps_fail_twice_then_answer_always_fail_and_answer_slowly() -> None:
    trapped = DemoSite(pages=20, traps=True, retry_traps=True, slow_seconds=0.5)
    assert {"/flaky", "/broken", "/slow"} <= trapped.reachable()
    assert trapped.flaky == {"/flaky": 2} and trapped.server_errors == {"/broken"}
    with trapped.serve() as srv:
        client = _Client(srv)
        try:
            assert [client.get("/flaky")[0] for _ in range(4)] == [500, 500, 200, 200]
            assert [client.get("/broken")[0] for _ in range(3)] == [500, 500, 500]
            started = time.monotonic()
            status, headers, body = client.get("/slow")
            assert time.monotonic() - started >= 0.5  # the page is slow on purpose, not fast by accident
            assert status == 200 and _parse(body, headers["Content-Type"]).title == "A slow page"
            srv.reset_hits()
            assert client.get("/flaky")[0] == 500  # counted afresh after reset_hits
        finally:
            client.close()
        statuses, titles, _ = _bfs(srv)
    # the home page links to all three; a crawler that does not retry sees the flaky page fail
    assert {statuses["/flaky"], statuses["/broken"], statuses["/slow"]} == {500, 200}
    assert set(statuses) == trapped.reachable()


def _hang_up(srv: SiteServer, sent: bytes) -> None:
    """Send ``sent`` and close with a TCP reset (SO_LINGER 0): a client that went away."""
    import socket
    import struct

    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    if sent:
        sock.sendall(sent)
    sock.close()


def _wait_until_handlers_finish(srv: SiteServer, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while (srv._conns or not srv.hits()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not srv._conns, "a handler of a reset connection never finished"


def test_clients_that_hang_up_mid_request_print_no_traceback(capfd, site: DemoSite) -> None:
    with site.serve() as srv:
        for sent in (b"", b"GET /page/1 HTTP/1.1\r\nHost: x\r\n", b"GET /page/2 HTTP/1.1\r\n\r\n"):
            _hang_up(srv, sent)
        # slow: the reset reaches the handler while it waits, before it writes
        trapped = DemoSite(pages=5, traps=True, retry_traps=True, slow_seconds=0.5)
        with trapped.serve() as slow_srv:
            _hang_up(slow_srv, b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            _wait_until_handlers_finish(slow_srv)  # it writes after the page's delay, into the reset
        _wait_until_handlers_finish(srv)
        client = _Client(srv)
        try:
            assert client.get("/")[0] == 200  # still serving
        finally:
            client.close()
    out, err = capfd.readouterr()
    assert "Traceback" not in err and "ConnectionResetError" not in err and "BrokenPipeError" not in err, err


def _cli(args: list[str], cwd, **env: str):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    full_env = dict(os.environ, **env)
    full_env["PYTHONPATH"] = os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run([sys.executable, "-c", "from crawlcluster.cli import main; main()", *args], cwd=cwd,
                          env=full_env, capture_output=True, text=True, timeout=300)


# short retries whatever the default policy: two retries, half a second apart
QUICK_RETRIES = {"CRAWLCLUSTER_RETRIES": "2", "CRAWLCLUSTER_RETRY_DELAYS": "0.5"}


def test_a_crawl_of_the_retry_traps_retries_the_flaky_page_to_success_and_ends_the_broken_one(
        tmp_path) -> None:
    from tests.outcomes import load_rows, target_of

    trapped = DemoSite(pages=20, traps=True, retry_traps=True, slow_seconds=1)
    with trapped.serve() as srv:
        done = _cli(["crawl", srv.url + "/", "--db", str(tmp_path / "f.db"), "-o",
                     str(tmp_path / "items.jsonl"),
                     "--project", "retrydemo", "-q"], tmp_path, **QUICK_RETRIES)
        hits = srv.hits()
    assert "Traceback" not in done.stderr, done.stderr
    tasks, items = load_rows(f"sqlite:///{tmp_path / 'f.db'}", "retrydemo")
    rows = {target_of(row["url"]): row for row in tasks}
    assert (rows["/flaky"]["status"], rows["/flaky"]["status_code"]) == ("done", 200)
    assert (rows["/slow"]["status"], rows["/slow"]["status_code"]) == ("done", 200)
    assert (rows["/broken"]["status"], rows["/broken"]["status_code"]) == ("failed", 500)
    assert "HTTP 500" in rows["/broken"]["error"]
    # two retries each, none for the slow page
    assert (hits["/flaky"], hits["/broken"], hits["/slow"]) == (3, 3, 1)
    titles = {target_of(item["url"]): item["item"].get("title") for item in items}
    assert titles["/flaky"] == "A page that fails twice, then answers" and titles["/slow"] == "A slow page"
    assert "/broken" not in titles


def test_the_demo_command_crawls_the_retry_traps_without_a_traceback(tmp_path) -> None:
    import json

    done = _cli(["demo", "--pages", "20", "-o", "demo.jsonl", "-q"], tmp_path, **QUICK_RETRIES)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "ConnectionResetError" not in done.stderr, done.stderr
    urls = {urlsplit(json.loads(line)["url"]).path
            for line in (tmp_path / "demo.jsonl").read_text().splitlines()}
    assert {"/flaky", "/slow", "/page/19"} <= urls and "/broken" not in urls
