"""Spiders the render tests submit; workers load them by import path (tests.render_spiders:...)."""

from __future__ import annotations

from crawlcluster import Request, Spider


class TreeSpider(Spider):
    """Follows every link of the JS site and stores what the callback saw of each page.
    ``render`` comes from spider_kwargs (True or "auto")."""

    name = "tree"

    def parse(self, response):
        heading = response.css_first("h1")
        yield {"url": response.url, "title": response.title,
               "h1": heading.text() if heading is not None else None, "rendered": response.rendered}
        for url in response.links():
            yield Request(url)


class OptionsSpider(Spider):
    """Render options on single pages: wait_for, js_script, screenshot, a client-side redirect,
    a page that never finishes loading, a slow page. ``paths`` picks which."""

    name = "options"
    base_url = ""
    paths: list[str] = []
    # generous: on a loaded 2-core machine (a CI run with the suite in 3 processes) opening a
    # page can take seconds; a test of a timeout passes its own
    timeout_seconds: float = 15.0
    hang_seconds: float | None = None  # /hang's own page timeout, so that only it runs short

    OPTIONS = {
        "/delayed": {"wait_for": "#late", "js_script": "() => document.querySelectorAll('p').length",
                     "screenshot": True},
        # the content arrives 700 ms after the script runs: 2.5 s leaves room for a loaded machine
        "/delayed?wait=2500": {"wait_for": 2500},
        "/delayed?wait=0": {},
        "/page/1": {"js_script": "document.title + '|' + location.pathname"},
        "/redirect": {},
        "/hang": {},
        "/slow": {},
    }

    def start(self):
        for path in self.paths:
            seconds = self.hang_seconds if path == "/hang" and self.hang_seconds else self.timeout_seconds
            options = dict(self.OPTIONS.get(path, {}), timeout_seconds=seconds)
            yield Request(self.base_url + path, render=True, render_options=options, retries=0)

    def parse(self, response):
        late = response.css_first("#late")
        yield {"url": response.url, "title": response.title,
               "late": late.text() if late is not None else None, "js_result": response.js_result}


class CountingSpider(TreeSpider):
    """TreeSpider that appends one line per callback run to ``calls_file``: the page's path
    and whether it was rendered (the callback's side effect the tests count)."""

    name = "counting"
    calls_file = ""

    def parse(self, response):
        from urllib.parse import urlsplit

        with open(self.calls_file, "a") as calls:
            calls.write(f"{urlsplit(response.url).path} {int(bool(response.rendered))}\n")
        yield from super().parse(response)
