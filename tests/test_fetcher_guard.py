"""The address guard in the fetcher: private addresses refused before any connection,
whatever name leads there (a mapped name, a literal, an IPv4-mapped IPv6 address, a redirect);
the start host trusted as given; a trusted connection never reused by a project that does
not trust it; credentials dropped when a redirect leaves its origin.

Names are mapped to 127.0.0.x with CRAWLCLUSTER_HOST_MAP; a listener on 127.0.0.2 records
every connection it accepts (none may arrive), and the ``loopback_only`` fixture refuses and
records any connection this process tries beyond loopback, so a broken guard fails the test
instead of sending a packet to 169.254.x or 10.x.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from crawlcluster import settings
from crawlcluster.embedded import run_embedded
from crawlcluster.messages import fetch_messages, project_trust
from crawlcluster.netguard import AddressPolicy
from crawlcluster.spider import LinkSpider, Request, Spider
from crawlcluster.urls import normalize_url
from tests.hostile_servers import Listener
from tests.outcomes import load_rows
from tests.scripted_site import ScriptedSite, page
from workers.fetcher import Fetcher

SECRET_AUTH = "Bearer s3cret-token"
SESSION = {"session": "abc123"}


@pytest.fixture
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Every connection this process tries to an address beyond loopback is refused (and
    recorded) here, before it leaves the machine: the test's own guard under the guard."""
    attempts: list[Any] = []

    def is_loopback(address: Any) -> bool:
        if not isinstance(address, tuple):
            return True  # a unix socket
        try:
            return ipaddress.ip_address(str(address[0]).split("%")[0]).is_loopback
        except ValueError:
            return False  # a name: the guard resolves names itself, nothing else should connect by name

    def checked(original: Any) -> Any:
        def connect(sock: socket.socket, address: Any, *args: Any) -> Any:
            if not is_loopback(address):
                attempts.append(address)
                raise ConnectionRefusedError(f"the test refuses a connection to {address!r} beyond loopback")
            return original(sock, address, *args)
        return connect

    monkeypatch.setattr(socket.socket, "connect", checked(socket.socket.connect))
    monkeypatch.setattr(socket.socket, "connect_ex", checked(socket.socket.connect_ex))
    loop_class = asyncio.SelectorEventLoop
    monkeypatch.setattr(loop_class, "sock_connect", checked(loop_class.sock_connect))
    yield attempts


@pytest.fixture
def inside() -> Iterator[Listener]:
    listener = Listener("127.0.0.2", answer=b"HTTP/1.1 200 OK\r\nContent-Length: 29\r\n\r\n"
                                             b"<title>inside secret</title>\n")
    yield listener
    listener.stop()


@pytest.fixture
def site() -> Iterator[ScriptedSite]:
    s = ScriptedSite()
    yield s
    s.stop()


def _port(site: ScriptedSite) -> int:
    return site.server.server_address[1]


def _fetcher(**env: str) -> Fetcher:
    s = settings.Settings.load({f"CRAWLCLUSTER_{k.upper()}": v for k, v in env.items()})
    return Fetcher.from_settings(s)


def _refused_urls(listener: Listener, site_port: int) -> list[tuple[str, str]]:
    return [
        (f"http://inside.test:{listener.port}/secret", "127.0.0.2, a loopback address"),
        (f"http://127.0.0.2:{listener.port}/", "127.0.0.2, a loopback address"),
        ("http://169.254.169.254/latest/meta-data/iam/security-credentials/", "the cloud metadata address"),
        ("http://10.0.0.1/", "10.0.0.1, a private address (RFC 1918)"),
        (f"http://[::ffff:127.0.0.1]:{site_port}/", "a loopback address inside an IPv6 address"),
        (f"http://[::ffff:127.0.0.2]:{listener.port}/", "a loopback address inside an IPv6 address"),
        (f"http://localhost:{listener.port}/", "a loopback address"),
    ]


def test_private_addresses_are_refused_before_any_connection_and_the_start_host_is_trusted(
        loopback_only, inside, site):
    site.route("/", lambda n, h: page("the site"))
    site.route("/away", lambda n, h: (302, {"Location": f"http://inside.test:{inside.port}/secret"}, b""))
    port = _port(site)
    fetcher = _fetcher(host_map="site.test=127.0.0.1,inside.test=127.0.0.2")
    trust = [f"site.test:{port}"]  # the allow-list names the test site only
    try:
        cases = _refused_urls(inside, port)
        results = fetcher.fetch_many([{"id": url, "url": url} for url, _ in cases], trust=trust)
        for (url, named), result in zip(cases, results):
            assert result.error is not None and result.error.kind == "address", (url, result.error)
            assert named in str(result.error) and url in str(result.error)
        # the trusted start host is fetched; its redirect to an inside name is a row of its own,
        # fetched with the same trust, and refused
        [home, away] = fetcher.fetch_many([{"id": "home", "url": f"http://site.test:{port}/"},
                                           {"id": "away", "url": f"http://site.test:{port}/away"}],
                                          trust=trust)
        assert home.status == 200 and b"the site" in home.body
        assert away.redirect_to == f"http://inside.test:{inside.port}/secret"
        [hop] = fetcher.fetch_many([{"id": "hop", "url": away.redirect_to}], trust=trust)
        assert hop.error is not None and hop.error.kind == "address"
        assert "inside.test:" in str(hop.error) and "127.0.0.2, a loopback address" in str(hop.error)
    finally:
        fetcher.close()
    assert inside.accepted == [], "the guard let a connection reach 127.0.0.2"
    assert loopback_only == [], f"connections tried beyond loopback: {loopback_only}"
    assert sorted(path for _, path, _ in site.log) == ["/", "/away"]  # [::ffff:127.0.0.1] never reached it


def test_with_the_guard_off_the_same_names_are_fetched(loopback_only, inside):
    """The instrument works: with ssrf_guard=false the inside name reaches the listener."""
    fetcher = _fetcher(host_map="inside.test=127.0.0.2", ssrf_guard="false")
    try:
        [result] = fetcher.fetch_many([{"id": "x", "url": f"http://inside.test:{inside.port}/secret"}])
    finally:
        fetcher.close()
    assert result.status == 200 and b"inside secret" in result.body
    assert len(inside.accepted) == 1 and loopback_only == []


def test_a_connection_opened_for_a_trusting_project_is_not_reused_by_one_that_does_not(loopback_only, site):
    site.route("/", lambda n, h: page("the site"))
    url = f"http://127.0.0.1:{_port(site)}/"
    fetcher = _fetcher()
    try:
        [trusted] = fetcher.fetch_many([{"id": "a", "url": url}], trust=[f"127.0.0.1:{_port(site)}"])
        # the keep-alive connection to the same origin is open; a project without the trust
        # must not get it
        [other] = fetcher.fetch_many([{"id": "b", "url": url}])
        [networks] = fetcher.fetch_many([{"id": "c", "url": url}], trust=["127.0.0.0/8"])
    finally:
        fetcher.close()
    assert trusted.status == 200 and networks.status == 200
    assert other.error is not None and other.error.kind == "address"
    assert len(site.hits("/")) == 2


def test_the_link_spider_stays_on_its_start_hosts_ports():
    spider = LinkSpider(allowed_domains=["example.com", "127.0.0.1:8000"])
    assert spider.allows("http://example.com/a") and spider.allows("https://example.com/")
    assert spider.allows("https://www.example.com/")
    for url in ("http://example.com:6379/", "http://example.com:2375/containers/json",
                "https://example.com:10250/pods", "http://127.0.0.1/", "http://127.0.0.1:6379/"):
        assert not spider.allows(url), url
    assert spider.allows("http://127.0.0.1:8000/x")


def test_the_scheduler_puts_the_projects_trust_into_every_fetch_message():
    trust = project_trust({"start_hosts": ["site.test:8000"], "allow_private": ["10.1.0.0/16"]})
    assert trust == ["site.test:8000", "10.1.0.0/16"]
    rows = [{"task_id": str(i), "url": f"http://site.test:8000/{i}"} for i in range(3)]
    messages = fetch_messages("p", rows, 2, trust)
    assert [m["trust"] for m in messages] == [trust, trust]
    assert "trust" not in fetch_messages("p", rows, 2, [])[0]
    policy = AddressPolicy().trusting(trust)
    assert policy.host_allowed("site.test", 8000) and not policy.host_allowed("site.test", 6379)


def test_submit_records_the_start_hosts_and_allow_private_as_the_projects_trust(sqlite_url):
    from crawlcluster.database.projects import project_row
    from crawlcluster.db import get_engine
    from crawlcluster.errors import ConfigurationError
    from crawlcluster.submission import submit

    submit(["http://localhost:8000/", "http://intranet.test/"], project="t", database_url=sqlite_url,
           allow_private=["wiki.test:8080", "10.20.0.0/16"])
    submit(["https://[::1]:9443/"], project="t", database_url=sqlite_url)  # adds its host
    with get_engine(sqlite_url).connect() as conn:
        values = project_row(conn, "t")["settings"]
    assert values["start_hosts"] == ["[::1]:9443", "intranet.test:443", "intranet.test:80", "localhost:8000"]
    assert values["allow_private"] == ["wiki.test:8080", "10.20.0.0/16"]
    assert project_trust(values)[-2:] == ["wiki.test:8080", "10.20.0.0/16"]
    with pytest.raises(ConfigurationError, match="allow_private"):
        submit(["http://a.test/"], project="u", database_url=sqlite_url, allow_private=["http://x/"])


class GuardSpider(Spider):
    """Sends credentials on its requests to the site; its home page links to inside names
    and redirects same-origin, cross-origin and to an inside name."""

    name = "guard"
    base = ""
    links: list[str] = []

    def start(self):
        yield Request(self.base + "/", headers={"Authorization": SECRET_AUTH}, cookies=SESSION)

    def parse(self, response):
        yield {"url": response.url, "title": response.title}
        for link in self.links:
            if link.startswith("/"):
                yield Request(self.base + link, headers={"Authorization": SECRET_AUTH}, cookies=SESSION)
            else:
                yield Request(link)


def test_a_crawl_refuses_inside_links_and_redirects_and_keeps_credentials_with_their_origin(
        loopback_only, inside, site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    other = ScriptedSite()  # another server on another port, named by allow_private
    try:
        port, other_port = _port(site), _port(other)
        monkeypatch.setenv("CRAWLCLUSTER_HOST_MAP", "site.test=127.0.0.1,inside.test=127.0.0.2")
        settings.reset()
        base = f"http://site.test:{port}"
        refused = _refused_urls(inside, port)
        links = ["/same", "/cross", "/to-inside"] + [url for url, _ in refused]
        site.route("/", lambda n, h: page("home"))
        site.route("/same", lambda n, h: (302, {"Location": "/landing"}, b""))
        site.route("/landing", lambda n, h: page("landing"))
        site.route("/cross", lambda n, h: (302, {"Location": f"http://127.0.0.1:{other_port}/landing"}, b""))
        site.route("/to-inside", lambda n, h: (302, {"Location": f"http://inside.test:{inside.port}/x"}, b""))
        other.route("/landing", lambda n, h: page("other landing"))
        started = time.monotonic()
        result = run_embedded(GuardSpider, project="guard", database_path=str(tmp_path / "g.db"),
                              progress=False, timeout_seconds=60,
                              settings={"allow_private": [f"127.0.0.1:{other_port}"], "retries": 0},
                              spider_kwargs={"base": base, "links": links})
        print(f"guarded crawl: {time.monotonic() - started:.1f}s, {result.stats}")
        tasks, items = load_rows(f"sqlite:///{tmp_path / 'g.db'}", "guard")
    finally:
        other.stop()
    by_url = {row["url"]: row for row in tasks}
    for url, named in refused:
        row = by_url[normalize_url(url)]
        assert row["status"] == "failed" and row["error_kind"] == "address", row
        assert named in row["error"], row["error"]
    hop = by_url[f"http://inside.test:{inside.port}/x"]
    assert hop["status"] == "failed" and hop["error_kind"] == "address" and "127.0.0.2" in hop["error"]
    assert {item["item"]["title"] for item in items} >= {"home", "landing", "other landing"}
    # credentials: kept on the same-origin redirect, dropped on the one that left the origin
    [(_, same)] = site.hits("/landing")
    assert same.get("authorization") == SECRET_AUTH and "session=abc123" in same.get("cookie", "")
    [(_, crossed)] = other.hits("/landing")
    assert "authorization" not in crossed and "cookie" not in crossed, crossed
    assert inside.accepted == [] and loopback_only == []
