"""The small-page benchmark site: ~2 KB pages with ~20 links each, a few 5xx pages and redirects.

    python -m bench.fastsite --small --pages 2000             # served like the fast site
    python -m bench.fastsite --small --pages 2000 --describe  # sizes, links, errors, redirects

The bench site's 10–50 KB pages hide a crawler's per-URL costs behind its per-byte costs;
on pages this small almost all of a crawler's time is per URL (a frontier insert, a
de-duplication, a message, a store transaction), which is where crawlcluster and Scrapy
differ most. Same link graph as :class:`bench.fastsite.FastSite` (a tree of 8 children per
page, the parent, the four sections, random pages to ~20 links), same pre-rendered serving
and hit counts, and:

- 1% of the pages answer ``500 Internal Server Error`` every time (leaves of the tree, so
  nothing is reachable only through them): both crawlers retry them and give up;
- 1% answer ``301 Moved Permanently`` to ``/moved/N.html``, which serves the page: the
  target is linked from nowhere, so a second request for it is a duplicate.
"""

from __future__ import annotations

import html
import random

from bench.fastsite import SECTIONS, TREE_BRANCHING, FastSite, _response

ERROR_SHARE = 0.01
REDIRECT_SHARE = 0.01
_HTML = "text/html; charset=utf-8"


class SmallSite(FastSite):
    """:class:`FastSite`'s graph with ~2 KB pages, some of them errors and redirects."""

    def __init__(self, pages: int = 2000, *, seed: int = 11) -> None:
        super().__init__(pages, seed=seed)
        rng = random.Random(seed * 31 + 7)
        leaves = [n for n in range(len(SECTIONS) + 1, pages) if TREE_BRANCHING * n + 1 >= pages]
        errors = set(rng.sample(leaves, min(len(leaves), round(pages * ERROR_SHARE))))
        others = [n for n in range(len(SECTIONS) + 1, pages) if n not in errors]
        moved = rng.sample(others, min(len(others), round(pages * REDIRECT_SHARE)))
        self.redirects = {self.path(n): self.moved_path(n) for n in sorted(moved)}
        self.error_paths = frozenset(self.path(n) for n in errors)
        self.extra_paths = frozenset(self.redirects.values())

    @staticmethod
    def moved_path(n: int) -> str:
        return f"/moved/{n}.html"

    def render(self, n: int) -> bytes:
        """Page ``n``: a short head, the nav, a paragraph, ~20 links in a list; about 2 KB."""
        rng = random.Random(self.seed * 7_000_009 + n)
        title = f"{self._titles[n]} — note {n}"
        nav = "".join(f"<li>{self._a(s, name.title())}</li>" for s, name in enumerate(SECTIONS, 1)
                      if s < self.pages)
        links = "".join(f"<li>{self._a(t)}</li>\n" for t in self.links(n) if t > len(SECTIONS))
        paragraph = self._paragraphs[rng.randrange(len(self._paragraphs))][:rng.randint(200, 600)]
        page = (
            '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{html.escape(title)}</title>\n</head>\n"
            f"<body>\n<header><nav><ul>{nav}</ul></nav></header>\n<main>\n<h1>{html.escape(title)}</h1>\n"
            f"<p>{paragraph}</p>\n<ul>\n{links}</ul>\n</main>\n"
            f"<footer>{self._a(0, 'Home')} · page {n} of {self.pages}</footer>\n</body>\n</html>\n"
        )
        return page.encode("utf-8")

    def responses(self) -> dict[str, tuple[bytes, bytes]]:
        responses = super().responses()
        for path in self.error_paths:
            responses[path] = _response("500 Internal Server Error", _HTML,
                                        b"<!DOCTYPE html><html><head><title>Server error</title></head>"
                                        b"<body><h1>500</h1></body></html>")
        for source, target in self.redirects.items():
            responses[target] = responses[source]
            responses[source] = _response("301 Moved Permanently", _HTML, b"",
                                          f"Location: {target}\r\n")
        return responses
