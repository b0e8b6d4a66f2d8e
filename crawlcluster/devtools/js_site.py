"""A local site whose links exist only after JavaScript runs, for the render tests and bench.

``JsSite(pages=12)`` serves an index and pages ``/page/1..N`` whose content and links are
written by inline scripts (a binary tree: page i links to 2i+1 and 2i+2), behind a
``<noscript>`` wall. Trap pages: ``/delayed`` (content after 700 ms), ``/redirect`` (a
client-side redirect to ``/landing``), ``/hang`` (a script that never arrives, so ``load``
never fires), ``/slow`` (answers after ``slow_seconds``), ``/with-image`` (an image).
``JsSite(static=True)`` serves the same tree as plain HTML with no scripts.

Every request is logged with who made it: ``"browser"`` (Chromium sends ``Sec-Fetch-Mode``)
or ``"http"`` (httpx), so tests count renders and fetches per page from the server's side.
"""

from __future__ import annotations

import collections
import http.server
import threading
import time
from urllib.parse import urlsplit

FILLER = ("This paragraph is ordinary server-rendered text, long enough that a heuristic looking for "
          "empty application shells sees a real page. ") * 3


class _QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:  # noqa: ANN001 - socketserver's signature
        pass  # a browser closing its keep-alive connections is not news


class JsSite:
    def __init__(self, pages: int = 12, *, static: bool = False, slow_seconds: float = 3.0) -> None:
        self.pages = pages
        self.static = static
        self.slow_seconds = slow_seconds
        self._lock = threading.Lock()
        self._hits: collections.Counter[tuple[str, str]] = collections.Counter()
        self._stop = threading.Event()
        self.in_flight = 0
        self.max_in_flight = 0
        site = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                site._serve(self)

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        daemon=True)
        self._thread.start()

    # -- what tests read ---------------------------------------------------------------
    def page_paths(self) -> set[str]:
        """The pages of the link tree: the index and /page/1..N."""
        return {"/"} | {f"/page/{i}" for i in range(1, self.pages + 1)}

    def hits(self, client: str | None = None) -> collections.Counter[str]:
        """Requests per path, by ``client`` ("browser" or "http") or by both."""
        with self._lock:
            counts: collections.Counter[str] = collections.Counter()
            for (path, who), n in self._hits.items():
                if client is None or who == client:
                    counts[path] += n
            return counts

    def reset(self) -> None:
        with self._lock:
            self._hits.clear()
            self.max_in_flight = 0

    def stop(self) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    # -- serving -------------------------------------------------------------------------
    def _children(self, index: int) -> list[int]:
        return [c for c in (2 * index + 1, 2 * index + 2) if c <= self.pages]

    def _page(self, title: str, heading: str, links: list[str], extra: str = "",
              static: bool | None = None) -> str:
        if self.static if static is None else static:
            anchors = "".join(f'<li><a href="{href}">{href}</a></li>' for href in links)
            return (f"<!doctype html><html><head><title>{title}</title></head><body><h1>{heading}</h1>"
                    f"<p>{FILLER}</p><ul>{anchors}</ul>{extra}</body></html>")
        script = ("<script>document.title = %r; var app = document.getElementById('app');"
                  "app.innerHTML = '<h1>' + %r + '</h1><ul>' + %r.map(function (h) {"
                  " return '<li><a href=\"' + h + '\">' + h + '</a></li>'; }).join('') + '</ul>';</script>"
                  % (title, heading, links))
        return (f"<!doctype html><html><head><title>loading</title></head><body>"
                f"<noscript>Please enable JavaScript to use this site.</noscript>"
                f'<div id="app"></div>{script}{extra}</body></html>')

    def _html_for(self, path: str) -> str | None:
        if path == "/":
            return self._page("index", "Index", [f"/page/{c}" for c in (1, 2) if c <= self.pages])
        if path.startswith("/page/") and path[6:].isdigit() and 1 <= int(path[6:]) <= self.pages:
            index = int(path[6:])
            return self._page(f"page {index}", f"Page {index}",
                              [f"/page/{c}" for c in self._children(index)] + ["/"])
        if path == "/delayed":
            return ("<html><head><title>delayed</title></head><body><div id='app'></div><script>"
                    "setTimeout(function () { document.getElementById('app').innerHTML ="
                    " '<p id=\"late\">arrived late</p>'; }, 700);</script></body></html>")
        if path == "/redirect":
            return "<html><head><script>location.replace('/landing');</script></head><body></body></html>"
        if path == "/landing":
            return self._page("landing", "Landing", ["/"])
        if path == "/hang":
            return ("<html><head><title>hang</title><script src='/never.js'></script></head>"
                    "<body>never</body></html>")
        if path == "/slow":
            self._stop.wait(self.slow_seconds)
            return self._page("slow", "Slow", ["/"])
        if path == "/with-image":
            return ("<html><head><title>image</title></head>"
                    "<body><img src='/pixel.png'><p>picture</p></body></html>")
        return None

    def _serve(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        path = urlsplit(handler.path).path
        who = "browser" if handler.headers.get("Sec-Fetch-Mode") else "http"
        with self._lock:
            self._hits[(path, who)] += 1
            if path != "/never.js":  # never answered: it would count against every later test
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if path == "/never.js":
                self._stop.wait(120)  # bounded: the server's stop ends it
                body, ctype, code = b"", "application/javascript", 200
            elif path == "/pixel.png":
                body, ctype, code = b"\x89PNG\r\n\x1a\n", "image/png", 200
            else:
                html = self._html_for(path)
                body = (html or "<html><body>not found</body></html>").encode()
                ctype, code = "text/html; charset=utf-8", 200 if html is not None else 404
        finally:
            # in flight until the answer is ready: the client may start its next request
            # the moment the body arrives
            with self._lock:
                self.in_flight -= path != "/never.js"
        try:
            handler.send_response(code)
            handler.send_header("Content-Type", ctype)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the browser gave up on a hanging request


def wait_until(predicate, timeout: float, interval: float = 0.1) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass (a bounded wait)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


class MixedSite(JsSite):
    """A site of three kinds of pages for ``render="auto"``, logged as :class:`JsSite` logs:

    * ``/static/N`` (1..static_pages): plain HTML, a binary tree of links (``/static/2N``, ``2N+1``);
    * ``/app/N`` (1..app_pages): an application shell whose script writes its text and its
      links (``/app/2N``, ``2N+1``) behind a ``<noscript>`` wall;
    * ``/js/N`` (1..js_pages): a complete page, full text and a static link to ``/js/N+1``,
      whose script adds two links, ``/extra/N/a`` and ``/extra/N/b``: plain pages reachable
      only through those script-written links.

    The index ``/`` links to ``/static/1``, ``/app/1`` and ``/js/1`` (those that exist)."""

    def __init__(self, static_pages: int = 15, app_pages: int = 6, js_pages: int = 6) -> None:
        self.static_pages, self.app_pages, self.js_pages = static_pages, app_pages, js_pages
        super().__init__(pages=0, static=True)

    def page_paths(self) -> set[str]:
        """Every page reachable from ``/``, the script-written links followed."""
        return ({"/"} | {f"/static/{i}" for i in range(1, self.static_pages + 1)}
                | {f"/app/{i}" for i in range(1, self.app_pages + 1)}
                | {f"/js/{i}" for i in range(1, self.js_pages + 1)}
                | {f"/extra/{i}/{s}" for i in range(1, self.js_pages + 1) for s in "ab"})

    def _plain(self, title: str, links: list[str], script: str = "") -> str:
        anchors = "".join(f'<li><a href="{href}">{href}</a></li>' for href in links)
        return (f"<!doctype html><html><head><title>{title}</title></head><body><h1>{title}</h1>"
                f"<p>{FILLER}</p><ul id='links'>{anchors}</ul>{script}</body></html>")

    def _html_for(self, path: str) -> str | None:
        parts = path.strip("/").split("/")
        number = int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else 0
        if path == "/":
            firsts = [f"/{kind}/1" for kind, count in (("static", self.static_pages), ("app", self.app_pages),
                                                      ("js", self.js_pages)) if count]
            return self._plain("index", firsts)
        if parts[0] == "static" and len(parts) == 2 and 1 <= number <= self.static_pages:
            return self._plain(f"static {number}", [f"/static/{c}" for c in (2 * number, 2 * number + 1)
                                                    if c <= self.static_pages])
        if parts[0] == "app" and len(parts) == 2 and 1 <= number <= self.app_pages:
            children = [f"/app/{c}" for c in (2 * number, 2 * number + 1) if c <= self.app_pages]
            return self._page(f"app {number}", f"App {number}", children, static=False)
        if parts[0] == "js" and len(parts) == 2 and 1 <= number <= self.js_pages:
            script = ("<script>['a', 'b'].forEach(function (s) { var li = document.createElement('li');"
                      f" li.innerHTML = '<a href=\"/extra/{number}/' + s + '\">more</a>';"
                      " document.getElementById('links').appendChild(li); });</script>")
            following = [f"/js/{number + 1}"] if number < self.js_pages else []
            return self._plain(f"js {number}", following, script)
        if parts[0] == "extra" and len(parts) == 3 and 1 <= number <= self.js_pages and parts[2] in "ab":
            return self._plain(f"extra {number} {parts[2]}", [])
        return None


class LateScriptSite(JsSite):
    """Complete pages whose scripts start adding links later, for ``render="auto"``'s re-check:

    * ``/late/N``: full text, a static link to the page after it in :attr:`chain` (set by
      the test), and a script that adds a link to ``/extra/N`` only while
      :attr:`scripts_add_links` is on (off at first: rendered and plain agree);
    * ``/extra/N``: a plain page, reachable only through that script-written link."""

    def __init__(self) -> None:
        self.chain: list[int] = []
        self.scripts_add_links = False
        super().__init__(pages=0, static=True)

    def _html_for(self, path: str) -> str | None:
        parts = path.strip("/").split("/")
        if len(parts) != 2 or not parts[1].isdigit():
            return None
        number = int(parts[1])
        if parts[0] == "extra":
            return self._page(f"extra {number}", f"Extra {number}", [])
        if parts[0] != "late":
            return None
        following = self.chain[self.chain.index(number) + 1:][:1] if number in self.chain else []
        script = ("<script>if (%s) { var li = document.createElement('li'); li.innerHTML = "
                  "'<a href=\"/extra/%d\">more</a>'; document.querySelector('ul').appendChild(li); }</script>"
                  % ("true" if self.scripts_add_links else "false", number))
        return self._page(f"late {number}", f"Late {number}", [f"/late/{n}" for n in following], script)
