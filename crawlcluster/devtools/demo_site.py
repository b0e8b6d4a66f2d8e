"""A deterministic local demo web site with a known link graph, served with hit counting.

``traps=True`` adds what a crawler must get right on any site (404s, redirect chains and
loops, URL spellings, a latin-1 page, off-site links). ``retry_traps=True`` adds what a
crawl must wait for and end anyway: a page that answers 500 twice before it answers, one
that always answers 500, and a slow one; `crawlcluster demo` uses both, while the tests
that count every page use ``retry_traps`` only where they count retries too.
"""

from __future__ import annotations

import html
import logging
import random
from urllib.parse import parse_qsl, urlsplit

from crawlcluster.devtools.site_server import Response, SiteServer

logger = logging.getLogger(__name__)

HOME_TITLE = "crawlcluster demo site"
CHAIN_END = "/chain-end"
CHAIN_END_TITLE = "End of the redirect chain"
CHARSET_TARGET = "/charset/latin1"
CHARSET_TITLE = "Café Crème Brûlée à la Française"
PDF_TARGET = "/files/report.pdf"
CSV_TARGET = "/files/data.csv"
FLAKY_TARGET = "/flaky"  # 500 on its first FLAKY_FAILURES requests, then the page
FLAKY_TITLE = "A page that fails twice, then answers"
FLAKY_FAILURES = 2
BROKEN_TARGET = "/broken"  # 500, always
SLOW_TARGET = "/slow"
SLOW_TITLE = "A slow page"
SLOW_SECONDS = 2.0
OFFSITE_URLS = ("http://example.org/x", "https://www.iana.org/", "http://other.invalid/page")
# (page number, canonical sorted query): each is a distinct page from /page/N
QUERY_PAGES = ((3, "a=1&b=2"), (12, "lang=en&x=9"), (20, "p=2&q=z"))
# links a crawler must drop or recognise as the current page
IGNORED_LINKS = (
    '<a href="mailto:someone@example.org">mail</a>',
    '<a href="javascript:void(0)">script</a>',
    '<a href="tel:+100">phone</a>',
    '<a href="#only-fragment">fragment</a>',
    "<a>no href</a>",
    '<a href="">empty href</a>',
)
_WORDS = (
    "crawl frontier fetch parse store worker queue broker politeness robots host url link "
    "page graph depth breadth scheduler retry backoff cluster node shard lease batch "
    "canonical fragment query redirect charset latency throughput bandwidth cache index"
).split()
_HTML_UTF8 = "text/html; charset=utf-8"



def canonical_query(query: str) -> str:
    """The query with its params sorted by key then value (the demo uses no encodings)."""
    pairs = sorted(parse_qsl(query, keep_blank_values=True))
    return "&".join(f"{k}={v}" for k, v in pairs)


def _link(href: str, text: str) -> str:
    return f'<a href="{html.escape(href)}">{html.escape(text)}</a>'


def _document(title: str, body: str, head_extra: str = "") -> str:
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n{head_extra}</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


class DemoSite:
    """The link graph and ground truth; rendering is pure, serving is done by SiteServer."""

    def __init__(self, pages: int = 300, *, traps: bool = True, seed: int = 7, retry_traps: bool = False,
                 slow_seconds: float = SLOW_SECONDS) -> None:
        if pages < 1:
            raise ValueError("a demo site needs at least one page")
        self.pages = pages
        self.traps = traps
        self.retry_traps = retry_traps
        self.seed = seed
        rng = random.Random(seed)
        # ~6 extra links per page so the graph is not just a tree
        self._others: list[list[int]] = [[rng.randrange(pages) for _ in range(6)] for _ in range(pages)]
        self._pdf = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n" + rng.randbytes(3000) + b"\n%%EOF\n"
        self._csv = ("id,title\n" + "".join(f"{n},Page {n}\n" for n in range(min(pages, 50)))).encode("ascii")

        self.html_pages: dict[str, str] = {"/": HOME_TITLE}
        self.html_pages.update({f"/page/{n}": f"Page {n}" for n in range(pages)})
        self.non_html: dict[str, str] = {PDF_TARGET: "application/pdf", CSV_TARGET: "text/csv"}
        self.meta_charset_page: tuple[str, str] = (CHARSET_TARGET, CHARSET_TITLE)
        self.query_pages: dict[int, str] = {}
        self.not_found: set[str] = set()
        self.redirect_chain: list[str] = []
        self.redirect_loop: list[str] = []
        self.offsite_urls: set[str] = set()
        # retry traps: {target: 500s before the page}, targets that always answer 500, {target: delay}
        self.flaky: dict[str, int] = {}
        self.server_errors: set[str] = set()
        self.slow_pages: dict[str, float] = {}
        if retry_traps:
            self.flaky = {FLAKY_TARGET: FLAKY_FAILURES}
            self.html_pages[FLAKY_TARGET] = FLAKY_TITLE
            self.server_errors = {BROKEN_TARGET}
            self.slow_pages = {SLOW_TARGET: slow_seconds}
            self.html_pages[SLOW_TARGET] = SLOW_TITLE
        if traps:
            self.query_pages = {n: q for n, q in QUERY_PAGES if n < pages}
            for n, q in self.query_pages.items():
                self.html_pages[f"/page/{n}?{q}"] = f"Page {n} ({q})"
            # /page/{pages} is an off-by-one trap: it looks like a real page
            self.not_found = {"/missing/1", "/missing/2", "/missing/3", f"/page/{pages}"}
            self.redirect_chain = ["/redirect/1", "/redirect/2", "/redirect/3"]
            self.html_pages[CHAIN_END] = CHAIN_END_TITLE
            self.redirect_loop = ["/loop/a", "/loop/b"]
            self.html_pages[CHARSET_TARGET] = CHARSET_TITLE
            self.offsite_urls = set(OFFSITE_URLS)

    def reachable(self) -> set[str]:
        """Every target a correct crawler starting at "/" fetches exactly once."""
        return (
            set(self.html_pages) | self.not_found | set(self.redirect_chain)
            | set(self.redirect_loop) | set(self.non_html) | self.server_errors
        )

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> SiteServer:
        """Serve the site in a daemon thread; returns once the socket is listening."""
        return SiteServer(self, host, port)

    # -- rendering -------------------------------------------------------------------

    def respond(self, target: str, host: str, port: int, nth: int = 1) -> Response:
        """The response for a raw request target (links depend on the serving host/port);
        ``nth`` counts the requests for it so far, this one included (the flaky page)."""
        parts = urlsplit(target)
        path = parts.path
        if path in self.flaky and nth <= self.flaky[path]:
            return self._html(_document("500 Internal Server Error",
                                        f"<h1>Try again</h1><p>attempt {nth}</p>"), 500)
        if path in self.server_errors:
            return self._html(_document("500 Internal Server Error", "<h1>Always broken</h1>"), 500)
        if path in (FLAKY_TARGET, SLOW_TARGET) and path in self.html_pages:
            title = self.html_pages[path]
            return self._html(_document(title, f"<h1>{html.escape(title)}</h1>\n<p>{_link('/', 'Home')}</p>"),
                              200)
        if path == "/":
            return self._html(self._home(), 200)
        if path.startswith("/page/") and path[6:].isdigit() and str(int(path[6:])) == path[6:]:
            n = int(path[6:])
            if n < self.pages:
                query = canonical_query(parts.query) if parts.query else ""
                return self._html(self._page(n, query, host, port), 200)
        if path in self.non_html:
            body = self._pdf if path == PDF_TARGET else self._csv
            return Response(200, (("Content-Type", self.non_html[path]),), body)
        if self.traps:
            if path in self.redirect_chain:
                i = self.redirect_chain.index(path)
                nxt = self.redirect_chain[i + 1] if i + 1 < len(self.redirect_chain) else CHAIN_END
                return self._redirect(301, nxt)
            if path in self.redirect_loop:
                i = self.redirect_loop.index(path)
                return self._redirect(302, self.redirect_loop[(i + 1) % len(self.redirect_loop)])
            if path == CHAIN_END:
                links = _link("/", "Home") + "\n" + _link("/page/0", "Page 0")
                return self._html(_document(CHAIN_END_TITLE, f"<h1>{CHAIN_END_TITLE}</h1>\n<p>{links}</p>"),
                                  200)
            if path == CHARSET_TARGET:
                return Response(200, (("Content-Type", "text/html"),), self._charset_page())
        return self._html(_document("404 Not Found", "<h1>Not Found</h1>"), 404)

    @staticmethod
    def _html(doc: str, status: int) -> Response:
        return Response(status, (("Content-Type", _HTML_UTF8),), doc.encode("utf-8"))

    @staticmethod
    def _redirect(status: int, location: str) -> Response:
        body = _document("Moved", f"<p>Moved to {_link(location, location)}</p>").encode("utf-8")
        return Response(status, (("Location", location), ("Content-Type", _HTML_UTF8)), body)

    def _trap_links(self) -> list[str]:
        links = [_link(t, t) for t in sorted(self.not_found)]
        links += [_link(self.redirect_chain[0], "redirect chain"),
                  _link(self.redirect_loop[0], "redirect loop")]
        links += [_link(CHARSET_TARGET, "latin-1 page")]
        links += [_link(u, "elsewhere") for u in OFFSITE_URLS]
        return links + list(IGNORED_LINKS)

    def _query_links(self) -> list[str]:
        links = []
        for n, q in self.query_pages.items():
            reordered = "&".join(reversed(q.split("&")))
            links += [_link(f"/page/{n}?{reordered}", "query, reordered"),
                      _link(f"/page/{n}?{q}#x", "query, fragment"), _link(f"/page/{n}?{q}", "query")]
        return links

    def _home(self) -> str:
        links = [_link(f"/page/{n}", f"Page {n}") for n in range(min(self.pages, 10))]
        links += [_link(t, t) for t in self.non_html] if self.pages < 3 else []
        if self.traps:
            # relative-to-root and fragment spellings of /page/0, plus every trap
            links += [_link("page/0", "Page 0 (relative)"), _link("/page/0#top", "Page 0 (fragment)")]
            links += [_link(t, t) for t in self.non_html] + self._query_links() + self._trap_links()
        if self.retry_traps:
            links += [_link(FLAKY_TARGET, "flaky"), _link(BROKEN_TARGET, "broken"),
                      _link(SLOW_TARGET, "slow")]
        body = "<h1>Demo site</h1>\n<ul>\n" + "\n".join(f"<li>{a}</li>" for a in links) + "\n</ul>"
        return _document(HOME_TITLE, body)

    def _variant(self, target: int, i: int, n: int, base: str, host: str, port: int) -> str:
        """One of several spellings of /page/{target}, all normalising to the same target."""
        if not self.traps:
            return f"/page/{target}"
        forms = (
            f"/page/{target}",
            f"./{target}",                        # relative to /page/
            f"../page/{target}",
            f"{target}#section-{i}",
            f"/page/{target}#top",
            f"{base}/page/{target}",              # absolute on our own host
            f"HTTP://{host}:{port}/page/{target}",  # upper-case scheme
        )
        return forms[(n + i) % len(forms)]

    def _page(self, n: int, query: str, host: str, port: int) -> str:
        base = f"http://{host}:{port}"
        title = f"Page {n} ({query})" if query else f"Page {n}"
        rng = random.Random(self.seed * 1_000_003 + n)
        paragraphs = [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(50, 80))).capitalize() + "."
                      for _ in range(rng.randint(4, 6))]
        children = [c for c in (2 * n + 1, 2 * n + 2) if c < self.pages]
        tree = [_link(f"/page/{c}", f"Page {c}") for c in children]
        others = [_link(self._variant(t, i, n, base, host, port), f"Page {t}")
                  for i, t in enumerate(self._others[n])]
        if port == 80:
            # explicit default port: must normalise to the same target as the bare host
            others.append(_link(f"http://{host}:80/page/{self._others[n][0]}", "default port"))
        extra: list[str] = []
        if n in (1, 2) or (n % 50 == 1 and self.traps):
            extra += [_link(t, t) for t in self.non_html]
        if self.traps:
            extra += [_link("/page/0#top", "Top")]  # the same target from every page
            if n % 10 == 3:
                extra.append(_link(f"/missing/{(n // 10) % 3 + 1}", "missing"))
            if n % 30 == 11:
                extra += [_link("/redirect/1", "moved"), _link("/loop/a", "loop"),
                          _link(CHARSET_TARGET, "café")]
            if n % 25 == 0:
                extra.append(_link(OFFSITE_URLS[(n // 25) % len(OFFSITE_URLS)], "elsewhere"))
            if n % 5 == 0:
                extra += list(IGNORED_LINKS)
            if n == 1:
                extra += self._query_links()
        nav = _link("/", "Home") + " | " + _link("/page/0", "First")
        parts = [f"<nav>{nav}</nav>", f"<h1>{html.escape(title)}</h1>"]
        parts += [f"<p>{p}</p>" for p in paragraphs[:2]]
        parts.append("<ul>\n" + "\n".join(f"<li>{a}</li>" for a in tree + others + extra) + "\n</ul>")
        parts += [f"<p>{p}</p>" for p in paragraphs[2:]]
        parts.append(f"<footer>{nav} | {' '.join(tree)}</footer>")  # duplicates on purpose
        body = "\n".join(parts)
        if n == 7:
            # deliberately broken markup: unclosed <div> and <p>
            body = body.replace("<h1>", '<div class="broken"><p>Unclosed paragraph\n<h1>', 1)
            body = body.replace("</p>", "", 2)
        head = (f'<meta name="description" content="Description of page {n}">\n'
                f'<link rel="canonical" href="/page/{n}">\n')
        return _document(title, body, head)

    def _charset_page(self) -> bytes:
        doc = (
            '<!DOCTYPE html>\n<html lang="fr">\n<head>\n<meta charset="iso-8859-1">\n'
            f"<title>{CHARSET_TITLE}</title>\n</head>\n<body>\n<h1>{CHARSET_TITLE}</h1>\n"
            "<p>Une page encodée en ISO-8859-1 : café, crème, brûlée, à la française.</p>\n"
            f'<p>{_link("/", "Accueil")}</p>\n</body>\n</html>\n'
        )
        return doc.encode("iso-8859-1")
