"""The render engine on its own, with real Chromium: options, recycling, bounded pages in
flight, crash and hang recovery, and a close that leaves no process behind. Plus the
render options object and the needs_render heuristic (no browser)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

from crawlcluster import ConfigurationError, RenderOptions, Request, Spider
from crawlcluster.devtools.js_site import JsSite, wait_until
from crawlcluster.http import Response
from crawlcluster.netguard import AddressPolicy
from workers.browser.chromium import BROWSER_OWNER_ENV, PROFILE_PREFIX
from workers.browser.proctree import descendants, pids_with_environ
from workers.browser.renderer import Renderer

MARKER = f"{BROWSER_OWNER_ENV}={os.getpid()}".encode()


@pytest.fixture(scope="module")
def js_site():
    site = JsSite(pages=6, slow_seconds=1.5)
    yield site
    site.stop()


@pytest.fixture
def make_renderer():
    made: list[Renderer] = []

    def make(**overrides) -> Renderer:
        options = dict(chromium_path="/usr/bin/chromium", pages_in_flight=4, recycle_pages=100,
                       max_pss_bytes=1 << 30, page_timeout_seconds=8, launch_timeout_seconds=30,
                       user_agent="crawlcluster-test", hung_grace_seconds=3,
                       policy=AddressPolicy().trusting(["127.0.0.1"]))  # the test site's host
        options.update(overrides)
        renderer = Renderer(**options)
        made.append(renderer)
        return renderer

    yield make
    for renderer in made:
        renderer.close()
    assert pids_with_environ(MARKER) == [], "a test left Chromium running"


def entry(site: JsSite, path: str, **options) -> dict:
    task = {"id": path, "url": site.url + path}
    if options:
        task["fetch"] = {"render": True, "render_options": RenderOptions(**options).to_dict()}
    return task


def browser_main_pid(renderer: Renderer) -> int:
    pid = renderer.browser_pid
    assert pid is not None
    return pid


def render_in_background(renderer: Renderer, entries: list[dict]) -> tuple[threading.Thread, list]:
    out: list = []
    thread = threading.Thread(target=lambda: out.extend(renderer.render_many(entries)), daemon=True)
    thread.start()
    return thread, out


def test_rendered_page_has_the_links_javascript_wrote_and_the_final_url_after_a_client_redirect(
        js_site, make_renderer):
    renderer = make_renderer()
    index, redirect = renderer.render_many([entry(js_site, "/"), entry(js_site, "/redirect")])
    assert index.ok and index.status == 200
    links = Response(index.entry["url"], 200, index.headers, index.body).links()
    assert links == [js_site.url + "/page/1", js_site.url + "/page/2"]
    assert redirect.ok and redirect.final_url == js_site.url + "/landing"


def test_wait_for_selector_js_script_and_screenshot(js_site, make_renderer):
    renderer = make_renderer()
    waited, plain, script = renderer.render_many([
        entry(js_site, "/delayed", wait_for="#late", screenshot=True),
        entry(js_site, "/delayed", wait_for=None),
        entry(js_site, "/page/3", js_script="() => [document.title, document.querySelectorAll('a').length]"),
    ])
    late = b'<div id="app"><p id="late">arrived late</p></div>'  # the script's own text holds the words too
    assert late in waited.body and late not in plain.body
    assert waited.screenshot is not None and waited.screenshot.startswith(b"\x89PNG\r\n\x1a\n")
    assert plain.screenshot is None
    assert script.js_result == ["page 3", 1]  # page 3 links only back to the index


def test_images_are_blocked_unless_load_images(js_site, make_renderer):
    renderer = make_renderer()
    js_site.reset()
    renderer.render_many([entry(js_site, "/with-image")])
    assert js_site.hits("browser")["/pixel.png"] == 0
    assert js_site.hits("browser")["/favicon.ico"] == 0
    renderer.render_many([entry(js_site, "/with-image", load_images=True)])
    assert js_site.hits("browser")["/pixel.png"] == 1


def test_page_that_never_loads_is_a_timeout_and_the_browser_goes_on(js_site, make_renderer):
    # a browser slow to close the timed-out page on a loaded machine (the suite in 3 processes on
    # 2 cores) is not hung: the grace is long enough that only a real hang would be killed
    renderer = make_renderer(hung_grace_seconds=20)
    hang, page = renderer.render_many([entry(js_site, "/hang", timeout_seconds=1.5),
                                       entry(js_site, "/page/1")])
    assert not hang.ok and hang.error.kind == "timeout"
    assert str(hang.error) == f"render timeout: {js_site.url}/hang did not reach 'load' within 1.5s"
    assert page.ok
    assert renderer.render_many([entry(js_site, "/page/2")])[0].ok
    assert renderer.counters.hung_kills == renderer.counters.crashes == 0


def test_http_and_navigation_errors_are_readable(js_site, make_renderer):
    renderer = make_renderer()
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # nothing listens once it is closed
    missing, unreachable = renderer.render_many([
        entry(js_site, "/missing"), {"id": "x", "url": f"http://127.0.0.1:{port}/"}])
    assert (missing.error.kind, missing.error.status_code, str(missing.error)) == \
        ("http", 404, "HTTP 404 (rendered)")
    # the browser only reaches the guard proxy, which says why it could not connect (a connect error,
    # retried as a fetch's would be)
    assert unreachable.error.kind == "connect"
    assert f"cannot connect to 127.0.0.1:{port}" in str(unreachable.error)


def test_browser_is_recycled_after_n_pages_and_the_old_one_is_gone(js_site, make_renderer):
    renderer = make_renderer(recycle_pages=3, pages_in_flight=2)
    seen: set[int] = set()
    for start in range(0, 8, 2):
        results = renderer.render_many([entry(js_site, f"/page/{1 + (start + i) % 6}") for i in range(2)])
        assert all(r.ok for r in results)
        seen.add(browser_main_pid(renderer))
    # 8 pages, 3 per browser: pages 1-3, 4-6, 7-8
    assert renderer.counters.recycles == 2 and renderer.counters.browsers_launched == 3
    assert renderer.counters.pages_rendered == 8
    alive = {pid for pid in seen if descendants(pid)}
    assert alive == {browser_main_pid(renderer)}


def test_browser_is_recycled_above_the_memory_limit(js_site, make_renderer):
    renderer = make_renderer(max_pss_bytes=1)  # any browser is above one byte
    pids = []
    for path in ("/page/1", "/page/2", "/page/3"):
        assert renderer.render_many([entry(js_site, path)])[0].ok
        pids.append(browser_main_pid(renderer))
    assert len(set(pids)) == 3 and renderer.counters.recycles == 2
    assert renderer.stats()["browser_pss_bytes"] > 0


def test_pages_in_flight_are_bounded(js_site, make_renderer):
    renderer = make_renderer(pages_in_flight=2)
    renderer.render_many([entry(js_site, "/page/1")])  # the browser is up
    js_site.reset()
    # distinct URLs: Chromium's cache lets only one request per URL through at a time
    results = renderer.render_many([entry(js_site, f"/slow?n={n}") for n in range(5)])
    assert all(r.ok for r in results)
    assert js_site.hits("browser")["/slow"] == 5
    assert js_site.max_in_flight == 2


def test_killed_browser_mid_render_is_replaced_and_the_page_rendered_again(js_site, make_renderer):
    renderer = make_renderer()
    renderer.render_many([entry(js_site, "/page/1")])
    old = browser_main_pid(renderer)
    old_tree = descendants(old)
    js_site.reset()
    thread, out = render_in_background(renderer, [entry(js_site, "/slow")])
    assert wait_until(lambda: js_site.hits("browser")["/slow"] == 1, timeout=20)
    os.kill(old, signal.SIGKILL)
    thread.join(timeout=60)
    [result] = out
    assert result.ok and result.attempts == 2, result.error
    assert js_site.hits("browser")["/slow"] == 2
    assert renderer.counters.crashes == 1 and renderer.counters.browsers_launched == 2
    assert browser_main_pid(renderer) != old
    assert wait_until(lambda: not any(descendants(pid) for pid in old_tree), timeout=10)


def test_hung_browser_is_killed_and_the_page_rendered_on_a_fresh_one(js_site, make_renderer):
    renderer = make_renderer(hung_grace_seconds=2)
    renderer.render_many([entry(js_site, "/page/1")])
    old = browser_main_pid(renderer)
    js_site.reset()
    thread, out = render_in_background(renderer, [entry(js_site, "/slow", timeout_seconds=4)])
    assert wait_until(lambda: js_site.hits("browser")["/slow"] == 1, timeout=20)
    os.kill(old, signal.SIGSTOP)  # alive but answering nothing
    thread.join(timeout=60)
    [result] = out
    assert result.ok and result.attempts == 2, result.error
    assert renderer.counters.hung_kills == 1 and renderer.counters.crashes == 0
    assert not descendants(old)


def test_close_waits_for_every_browser_process_and_removes_the_profile(js_site, make_renderer):
    renderer = make_renderer()
    renderer.render_many([entry(js_site, "/page/1")])
    tree = descendants(browser_main_pid(renderer))
    profiles = [Path(h.user_data_dir) for h in renderer._all]
    assert len(tree) >= 3 and pids_with_environ(MARKER)
    renderer.close()
    assert not any(descendants(pid) for pid in tree)
    assert pids_with_environ(MARKER) == []
    assert profiles and not any(p.exists() for p in profiles)


def test_a_new_browser_removes_the_profiles_left_by_render_workers_that_are_gone(js_site, make_renderer):
    """A render worker killed with SIGKILL leaves its browser's profile directory behind (its
    Chromium dies with it): the next browser started on the machine removes it, and leaves the
    directories of workers still running alone."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    base = Path(tempfile.gettempdir())
    stale = base / f"{PROFILE_PREFIX}{gone.pid}-test-stale"
    alive = base / f"{PROFILE_PREFIX}{os.getppid()}-test-alive"  # pytest's parent still runs
    try:
        for directory in (stale, alive):
            (directory / "Default").mkdir(parents=True, exist_ok=True)
        renderer = make_renderer()
        [page] = renderer.render_many([entry(js_site, "/page/1")])
        assert page.ok
        assert not stale.exists() and alive.exists()
        renderer.close()
    finally:
        for directory in (stale, alive):
            shutil.rmtree(directory, ignore_errors=True)


def test_missing_chromium_fails_the_page_with_a_sentence(js_site, make_renderer):
    renderer = make_renderer(chromium_path="/nonexistent/chromium")
    [result] = renderer.render_many([entry(js_site, "/page/1")])
    assert result.error.kind == "browser"
    assert "/nonexistent/chromium is not an executable" in str(result.error)
    assert "CRAWLCLUSTER_CHROMIUM_PATH" in str(result.error)


# -- no browser ----------------------------------------------------------------------------

def test_render_options_compare_by_value_and_travel_as_their_non_default_values():
    options = RenderOptions(wait_until="networkidle", wait_for="#app", viewport=(800, 600), screenshot=True)
    assert options.to_dict() == {"wait_until": "networkidle", "wait_for": "#app", "viewport": [800, 600],
                                 "screenshot": True}
    assert RenderOptions.from_dict(options.to_dict()) == options
    assert RenderOptions().to_dict() == {}
    assert repr(RenderOptions(js_script="x" * 100)) == f"RenderOptions(js_script='{'x' * 37}...')"
    request = Request("http://a.example/", render=True, render_options={"wait_for": 500})
    assert request.fetch_options() == {"render": True, "render_options": {"wait_for": 500}}
    assert Request("http://a.example/", render_options={"wait_for": 500}).fetch_options() is None


@pytest.mark.parametrize("bad, word", [
    ({"wait_until": "idle"}, "wait_until"), ({"wait_for": True}, "wait_for"),
    ({"viewport": (0, 10)}, "viewport"),
    ({"timeout_seconds": 0}, "timeout_seconds"), ({"colour": 1}, "colour"),
])
def test_bad_render_options_are_refused_by_name(bad, word):
    with pytest.raises(ConfigurationError, match=word):
        RenderOptions.from_dict(bad)


def test_render_mode_is_checked_and_the_spider_default_fills_unset_requests():
    with pytest.raises(ConfigurationError, match="render='yes'"):
        Request("http://a.example/", render="yes")

    class AutoSpider(Spider):
        render = "auto"
        render_options = {"wait_for": "#app"}

    spider = AutoSpider()
    assert spider.with_defaults(Request("http://a.example/")).fetch_options() == {
        "render": "auto", "render_options": {"wait_for": "#app"}}
    assert spider.with_defaults(Request("http://a.example/", render=False)).fetch_options() is None


def _html(body: str) -> Response:
    return Response("http://a.example/", 200, {"content-type": "text/html"},
                    f"<html><body>{body}</body></html>".encode())


def test_default_needs_render_heuristic():
    spider = Spider()
    shell = '<div id="root"></div><script src="/app.js"></script>'
    wall = ("<noscript>You need to enable JavaScript to run this app.</noscript><p>" + "text " * 100
            + "</p><script></script>")
    article = "<p>" + "A real article paragraph. " * 20 + "</p><script>track()</script>"
    assert spider.needs_render(_html(shell))
    assert spider.needs_render(_html(wall))
    assert not spider.needs_render(_html(article))
    assert not spider.needs_render(_html("<p>tiny page without scripts</p>"))
    assert not spider.needs_render(Response("http://a.example/x.json", 200,
                                            {"content-type": "application/json"}, b"{}"))
