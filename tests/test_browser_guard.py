"""The browser holds nothing and reaches only what the address guard allows, with real
Chromium and the render engine on its own: a trusted local site (``site.test``, mapped to
127.0.0.1) whose page aims an image, a fetch(), an iframe, a websocket and https at a name
mapped to 127.0.0.2 and redirects to 127.0.0.3; listeners bound on those addresses record
every connection they accept and must see none. Then Chromium's process tree: its
environment, its sockets (DevTools over a pipe, no port), its user and its sandbox."""

from __future__ import annotations

import http.server
import os
import pwd
import threading
from pathlib import Path

import pytest

from crawlcluster import RenderOptions
from crawlcluster.netguard import AddressPolicy
from tasks.render import failure_of
from tests.hostile_servers import Listener
from workers.browser.chromium import BROWSER_OWNER_ENV
from workers.browser.proctree import descendants, pids_with_environ
from workers.browser.renderer import Renderer

MARKER = f"{BROWSER_OWNER_ENV}={os.getpid()}".encode()
SECRETS = {"CRAWLCLUSTER_DATABASE_URL": "postgresql://crawl:pg-hunter2@db.test/crawl",
           "CRAWLCLUSTER_BROWSER_TEST_TOKEN": "cc-token-hunter2", "FLOWER_BASIC_AUTH": "admin:flower-hunter2",
           "REDIS_PASSWORD": "redis-hunter2", "API_SECRET": "api-hunter2",
           "CELERY_BROKER_URL": "redis://:broker-hunter2@redis.test:6379/0"}


class TrustedSite:
    """The site the project trusts: a page that reaches for inside addresses, and redirects."""

    def __init__(self, inside: int, other: int) -> None:
        self.hits: list[str] = []
        site = self
        pages = {
            "/": "<html><head><title>home</title></head><body><h1>home</h1></body></html>",
            "/hostile": (
                "<html><head><title>hostile</title></head><body><h1>hostile</h1>"
                f"<img src='http://inside.test:{inside}/pixel.png'>"
                f"<img src='https://inside.test:{inside}/tls.png'>"
                f"<iframe src='http://inside.test:{inside}/frame'></iframe>"
                f"<a href='http://127.0.0.3:{other}/'>inside</a>"
                "<p id=out>waiting</p><script>"
                f"fetch('http://inside.test:{inside}/api').then(() => 'reached', () => 'blocked')"
                "  .then(r => document.getElementById('out').textContent = 'fetch ' + r);"
                f"try {{ new WebSocket('ws://inside.test:{inside}/ws'); }} catch (e) {{}}"
                "</script></body></html>"),
            "/script-redirect": f"<script>location.replace('http://127.0.0.3:{other}/')</script>",
        }

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                site.hits.append(self.path)
                if self.path == "/redirect":
                    self.send_response(302)
                    self.send_header("Location", f"http://127.0.0.3:{other}/")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = pages.get(self.path, "not here").encode()
                self.send_response(200 if self.path in pages else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://site.test:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def guarded():
    inside, other = Listener("127.0.0.2"), Listener("127.0.0.3")
    site = TrustedSite(inside.port, other.port)
    made: list[Renderer] = []

    def make(**overrides) -> Renderer:
        options = dict(chromium_path="/usr/bin/chromium", pages_in_flight=4, recycle_pages=100,
                       max_pss_bytes=1 << 30, page_timeout_seconds=8, launch_timeout_seconds=30,
                       user_agent="crawlcluster-test", hung_grace_seconds=3,
                       policy=AddressPolicy(host_map={"site.test": "127.0.0.1", "inside.test": "127.0.0.2"}))
        options.update(overrides)
        made.append(Renderer(**options))
        return made[-1]

    yield make, site, inside, other
    for renderer in made:
        renderer.close()
    site.stop()
    inside.stop()
    other.stop()
    assert pids_with_environ(MARKER) == [], "a test left Chromium running"


def entry(url: str, **options) -> dict:
    return {"id": url, "url": url,
            "fetch": {"render": True, "render_options": RenderOptions(**options).to_dict()}}


def test_subresources_and_redirects_to_inside_addresses_never_connect_and_the_trusted_page_renders(guarded):
    make, site, inside, other = guarded
    renderer = make()
    trust = [site.url.split("//")[1].split(":")[0]]  # the project's start host, as the scheduler sends it
    home, hostile, redirect, scripted, direct = renderer.render_many([
        entry(site.url + "/"), entry(site.url + "/hostile", load_images=True, wait_for=1500),
        entry(site.url + "/redirect"), entry(site.url + "/script-redirect", wait_for=1500),
        entry(f"http://inside.test:{inside.port}/")], trust=trust)

    assert home.ok and b"<h1>home</h1>" in home.body
    assert hostile.ok and b"<h1>hostile</h1>" in hostile.body
    assert b"fetch blocked" in hostile.body  # the page's own script saw its fetch() fail
    assert inside.accepted == [] and other.accepted == []  # not one connection reached them
    # image, https image, iframe, fetch() and websocket, each refused by the proxy
    print(f"refused subresource requests: {renderer.counters.refused_requests}")
    assert renderer.counters.refused_requests >= 5

    assert not redirect.ok and redirect.error.kind == "refused"
    assert f"127.0.0.3:{other.port} resolves to 127.0.0.3, a loopback address" in str(redirect.error)
    assert f"(redirected to http://127.0.0.3:{other.port}/)" in str(redirect.error)
    assert failure_of(redirect)["status"] == "failed" and "retry" not in failure_of(redirect)
    assert not direct.ok and direct.error.kind == "refused"
    assert f"inside.test:{inside.port} resolves to 127.0.0.2" in str(direct.error)
    # a script's navigation is a main frame too: it never reached 127.0.0.3 (the page's own
    # document rendered, or the refusal is its error)
    assert scripted.ok or scripted.error.kind == "refused"
    assert other.accepted == [] and inside.accepted == []
    # Chromium asks the trusted site for /favicon.ico now and then, past the request
    # interception that blocks images (seen 1 CI run in 4): allowed, as it stays on that site
    assert site.hits.count("/hostile") == 1 and site.hits.count("/favicon.ico") <= 1


def _tree(renderer: Renderer) -> list[int]:
    """The browser's process tree as it stands, each process with the /proc files the checks
    read: Chromium starts and ends helper processes all the time, so one that is gone by the
    time it is read is left out (the browser's own process is never)."""
    pid = renderer.browser_pid
    assert pid is not None
    return [p for p in descendants(pid)
            if _proc(p, "cmdline") is not None and _proc(p, "environ") is not None]


def _proc(pid: int, name: str) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes()
    except OSError:
        return None


def _listening_inodes(pid: int) -> set[str]:
    inodes = set()
    for name in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        inodes |= {fields[9] for fields in (line.split() for line in lines) if fields[3] == "0A"}
    return inodes


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        pass
    return inodes


def test_chromium_holds_no_secret_listens_on_no_port_and_runs_sandboxed_as_nobody(guarded, monkeypatch):
    make, site, _inside, _other = guarded
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    renderer = make()
    [page] = renderer.render_many([entry(site.url + "/")], trust=["site.test"])
    assert page.ok
    tree = _tree(renderer)
    assert len(tree) >= 3

    checked = 0
    for pid in tree:
        environ = (_proc(pid, "environ") or b"").split(b"\0")
        if environ == [b""]:
            continue  # ended since the tree was listed
        checked += 1
        names = {item.split(b"=", 1)[0].decode() for item in environ if item}
        assert not {n for n in names if n.startswith("CRAWLCLUSTER_")}, (pid, names)
        assert not any(b"hunter2" in item for item in environ), pid
        assert "FLOWER_BASIC_AUTH" not in names and "REDIS_PASSWORD" not in names
    assert checked >= 3
    main_env = dict(item.split("=", 1) for item in
                    Path(f"/proc/{tree[0]}/environ").read_text().split("\0") if "=" in item)
    assert main_env["HOME"].startswith("/tmp/") and BROWSER_OWNER_ENV in main_env

    # DevTools over a pipe: no process of the tree listens on a TCP port, in any network namespace
    listening = {pid: _socket_inodes(pid) & _listening_inodes(pid) for pid in tree}
    assert not any(listening.values()), listening
    assert not any(b"--remote-debugging-port" in (_proc(pid, "cmdline") or b"") for pid in tree)

    # the sandbox: every process runs as nobody, none with --no-sandbox, renderers in their own
    # user and PID namespaces
    nobody = pwd.getpwnam("nobody").pw_uid
    owners = set()
    for pid in tree:
        try:
            owners.add(os.stat(f"/proc/{pid}").st_uid)
        except OSError:
            pass  # ended since the tree was listed
    assert owners == {nobody}
    assert not any(b"--no-sandbox" in (_proc(pid, "cmdline") or b"") for pid in tree)
    main_ns = {kind: os.readlink(f"/proc/{tree[0]}/ns/{kind}") for kind in ("user", "pid")}
    renderers = [pid for pid in tree if b"--type=renderer" in (_proc(pid, "cmdline") or b"")]
    assert renderers
    namespaces = []
    for pid in renderers:
        try:
            namespaces.append((os.readlink(f"/proc/{pid}/ns/user"), os.readlink(f"/proc/{pid}/ns/pid")))
        except OSError:
            continue
    assert namespaces and all(user != main_ns["user"] and pid_ns != main_ns["pid"]
                              for user, pid_ns in namespaces)


def test_a_sandbox_that_cannot_start_says_so_in_one_line_and_off_is_explicit(guarded):
    make, site, _inside, _other = guarded
    # Chromium refuses its sandbox as root: the same failure a container without user namespaces gives
    [refused] = make(user="root", sandbox=True).render_many([entry(site.url + "/")], trust=["site.test"])
    assert not refused.ok and refused.error.kind == "browser"
    message = str(refused.error)
    print(message)
    assert "\n" not in message
    assert "cannot start its sandbox" in message and "CRAWLCLUSTER_BROWSER_SANDBOX=off" in message
    assert "seccomp" in message and "CRAWLCLUSTER_BROWSER_USER" in message

    unsafe = make(user="root", sandbox=False)
    [page] = unsafe.render_many([entry(site.url + "/")], trust=["site.test"])
    assert page.ok
    assert b"--no-sandbox" in Path(f"/proc/{unsafe.browser_pid}/cmdline").read_bytes()
