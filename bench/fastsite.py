"""A fast benchmark web site: N pre-rendered HTML pages served by a raw asyncio HTTP/1.1 server.

    python -m bench.fastsite --pages 5000            # prints its URL, answers "hits" on stdin
    python -m bench.fastsite --pages 5000 --port 8800 --forever   # for wrk or a browser

Every page is 10–50 KB of deterministic HTML (head with inline style and JSON-LD, nav,
breadcrumbs, an article of sections and paragraphs, a related-links list, a footer) with
about 20 same-host links: a tree (8 children per page, so everything is reachable from
"/" within a few hops), the parent, the section pages in the nav and random pages.
``/robots.txt`` allows everything. All responses are rendered before the socket opens, so
serving one is a dictionary look-up and a ``transport.write``: the site must never be the
bottleneck of the crawler it measures. Per-target hit counts answer "was any page fetched
twice" for every crawler alike.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import logging
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import Any

from bench.site import SiteProcess

logger = logging.getLogger(__name__)

ROBOTS_PATH = "/robots.txt"
ROBOTS_TXT = b"User-agent: *\nAllow: /\n"
TREE_BRANCHING = 8
LINKS_PER_PAGE = 20
SECTIONS = ("news", "guides", "reference", "community")
_VOCABULARY = (
    "the of and to in is that for it as was with be by on not he this are or his from at which but have an "
    "they you were her she there been one all we their has would when if so no will more can out up what "
    "about into than them only other new some could time these two may then first any like now my such make "
    "over our even most after also made many before must through back years where much your way well down "
    "should because each just those people how too little state good very world still own see men work long "
    "here get both between life being under never day same another know while last might great old year off "
    "come since against go came right used take three crawler frontier scheduler worker queue broker "
    "politeness robots host link page graph depth breadth retry backoff cluster node shard lease batch "
    "canonical fragment query redirect charset latency throughput bandwidth cache index harbour river "
    "mountain valley garden kitchen library museum station market bridge island forest desert village castle "
    "theatre orchestra painting novel poetry history science energy climate ocean planet engine signal "
    "circuit network protocol compiler database storage memory processor"
).split()


def _slug(words: list[str]) -> str:
    return "-".join(words)


class FastSite:
    """The link graph and the rendered bytes of every response (nothing is built per request)."""

    def __init__(self, pages: int = 5000, *, seed: int = 11) -> None:
        if pages < 1:
            raise ValueError("the benchmark site needs at least one page")
        self.pages = pages
        self.seed = seed
        rng = random.Random(seed)
        # a shared pool of paragraphs keeps generating 5,000 pages to about a second
        self._paragraphs = [self._paragraph(rng) for _ in range(600)]
        self._titles = [" ".join(rng.choice(_VOCABULARY[100:]) for _ in range(3)).title()
                        for _ in range(pages)]
        self.paths = [self.path(n) for n in range(pages)]

    # paths answered with a 5xx, and paths reached only through a redirect (none here; the
    # small-page site in bench/smallsite.py has both)
    error_paths: frozenset[str] = frozenset()
    extra_paths: frozenset[str] = frozenset()

    @staticmethod
    def path(n: int) -> str:
        return "/" if n == 0 else f"/articles/{n}.html"

    def responses(self) -> dict[str, tuple[bytes, bytes]]:
        """Every path's rendered response, built once before the socket opens."""
        return {path: _response("200 OK", "text/html; charset=utf-8", self.render(n))
                for n, path in enumerate(self.paths)}

    def page_sizes(self, responses: dict[str, tuple[bytes, bytes]]) -> list[int]:
        """Body bytes of every page answered 200 (redirect targets in place of their sources)."""
        served = [p for p in self.paths if p not in self.error_paths] + sorted(self.extra_paths)
        return [len(responses[p][0]) - len(responses[p][1]) for p in served
                if responses[p][0].startswith(b"HTTP/1.1 200")]

    @staticmethod
    def _paragraph(rng: random.Random) -> str:
        sentences = []
        for _ in range(rng.randint(3, 8)):
            words = [rng.choice(_VOCABULARY) for _ in range(rng.randint(8, 22))]
            if rng.random() < 0.3:  # some inline markup, as real prose has
                i = rng.randrange(len(words))
                words[i] = f"<em>{words[i]}</em>" if rng.random() < 0.5 else f"<strong>{words[i]}</strong>"
            sentences.append(" ".join(words).capitalize() + ".")
        return " ".join(sentences)

    def links(self, n: int) -> list[int]:
        """The pages page ``n`` links to: tree children, parent, sections, then random ones."""
        rng = random.Random(self.seed * 1_000_003 + n)
        first_child = TREE_BRANCHING * n + 1
        targets = [c for c in range(first_child, first_child + TREE_BRANCHING) if c < self.pages]
        if n > 0:
            targets.append((n - 1) // TREE_BRANCHING)
        targets += [s for s in range(1, len(SECTIONS) + 1) if s < self.pages]
        unique = list(dict.fromkeys(t for t in targets if t != n))
        attempts = 0
        while len(unique) < min(LINKS_PER_PAGE, self.pages - 1) and attempts < 200:
            attempts += 1
            t = rng.randrange(self.pages)
            if t != n and t not in unique:
                unique.append(t)
        return unique

    def _a(self, n: int, text: str | None = None) -> str:
        return f'<a href="{self.path(n)}">{html.escape(text or self._titles[n])}</a>'

    def render(self, n: int) -> bytes:
        """Page ``n``'s HTML: 10–50 KB, the same bytes on every run."""
        rng = random.Random(self.seed * 7_000_009 + n)
        target_bytes = rng.randint(10_000, 46_000)
        title = f"{self._titles[n]} — article {n}"
        links = self.links(n)
        nav = "".join(f"<li>{self._a(s, name.title())}</li>"
                      for s, name in enumerate(SECTIONS, 1) if s < self.pages)
        crumbs = self._a(0, "Home")
        if n > 0:
            crumbs += " &rsaquo; " + self._a((n - 1) // TREE_BRANCHING)
        head = (
            '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(title)}</title>\n"
            f'<meta name="description" content="{html.escape(self._paragraphs[n % 600][:150])}">\n'
            f'<link rel="canonical" href="{self.path(n)}">\n'
            "<style>body{font-family:Georgia,serif;margin:0 auto;max-width:46em;line-height:1.5;color:#222}"
            "header,footer{border-bottom:1px solid #ddd;padding:.5em 0}"
            "nav ul{list-style:none;display:flex;gap:1em}"
            "article h2{margin-top:1.5em}aside{font-size:.9em;background:#f6f6f6;padding:.5em 1em}"
            ".meta{color:#666;font-size:.85em}</style>\n"
            '<script type="application/ld+json">'
            + json.dumps({"@context": "https://schema.org", "@type": "Article", "headline": title,
                          "datePublished": f"2024-{1 + n % 12:02d}-{1 + n % 28:02d}",
                          "wordCount": target_bytes // 6})
            + "</script>\n</head>\n"
        )
        top = (
            f'<body>\n<a href="#main" class="skip">Skip to content</a>\n<header><nav><ul>{nav}</ul></nav>'
            f'<p class="crumbs">{crumbs}</p></header>\n<main id="main"><article>\n'
            f"<h1>{html.escape(title)}</h1>\n"
            f"<p class=\"meta\">By staff writer · {rng.randint(2, 19)} min read</p>\n"
        )
        in_text = links[:len(links) // 2]
        related = links[len(links) // 2:]
        aside = ("<aside><h2>Related</h2><ul>\n" + "".join(f"<li>{self._a(t)}</li>\n" for t in related)
                 + "</ul></aside>\n")
        footer = (f"<footer><p>{self._a(0, 'Home')} · © 2024 Benchmark Gazette · page {n} of {self.pages}"
                  "</p></footer>\n</body>\n</html>\n")
        fixed = len(head) + len(top) + len(aside) + len(footer) + 40
        parts: list[str] = []
        size = 0
        section = 0
        while size + fixed < target_bytes or in_text:
            section += 1
            block = f"<section><h2>{section}. {html.escape(rng.choice(self._titles))}</h2>\n"
            for _ in range(rng.randint(2, 4)):
                paragraph = self._paragraphs[rng.randrange(600)]
                if in_text:  # links inside prose, like a real article
                    paragraph += f" See also {self._a(in_text.pop())}."
                block += f"<p>{paragraph}</p>\n"
            block += "</section>\n"
            parts.append(block)
            size += len(block)
        return (head + top + "".join(parts) + "</article></main>\n" + aside + footer).encode("utf-8")


def _response(status: str, content_type: str, body: bytes, extra_headers: str = "") -> tuple[bytes, bytes]:
    """(GET bytes, HEAD bytes) of one response, headers included; ``extra_headers`` are
    whole header lines, each ending in CRLF (a redirect's Location)."""
    header = (f"HTTP/1.1 {status}\r\nServer: bench-fastsite\r\nContent-Type: {content_type}\r\n"
              f"{extra_headers}Content-Length: {len(body)}\r\n\r\n").encode("ascii")
    return header + body, header


class HitCounter:
    """Requests per target since the last reset, and when the first and last arrived."""

    def __init__(self, site: FastSite) -> None:
        self.page_paths = set(site.paths)
        self.error_paths = set(site.error_paths)
        self.extra_paths = set(site.extra_paths)
        self.counts: Counter[str] = Counter()
        self.first_at = 0.0
        self.last_at = 0.0
        self.bytes_sent = 0

    def hit(self, target: str, sent: int) -> None:
        now = time.time()  # wall clock: the parent compares it with its own time.time()
        if not self.counts:
            self.first_at = now
        self.last_at = now
        self.counts[target] += 1
        self.bytes_sent += sent

    def reset(self) -> None:
        self.counts.clear()
        self.first_at = self.last_at = 0.0
        self.bytes_sent = 0

    def summary(self) -> dict[str, Any]:
        pages = {t: c for t, c in self.counts.items() if t in self.page_paths}
        # a 5xx page asked again is a retry, not a duplicate; a redirect target is a page's second URL
        once = {t: c for t, c in self.counts.items()
                if (t in self.page_paths or t in self.extra_paths) and t not in self.error_paths}
        return {
            "requests": sum(self.counts.values()),
            "pages": len(pages),
            "duplicates": sum(c - 1 for c in once.values() if c > 1),
            "error_requests": sum(c for t, c in self.counts.items() if t in self.error_paths),
            "robots": self.counts.get(ROBOTS_PATH, 0),
            "not_found": sum(c for t, c in self.counts.items()
                             if t not in self.page_paths and t not in self.extra_paths and t != ROBOTS_PATH),
            "first_at": self.first_at,
            "last_at": self.last_at,
            "bytes_sent": self.bytes_sent,
        }


class _HTTPProtocol(asyncio.Protocol):
    """HTTP/1.1 with keep-alive and pipelining; GET and HEAD; request bodies are skipped."""

    def __init__(self, responses: dict[str, tuple[bytes, bytes]], not_found: tuple[bytes, bytes],
                 hits: HitCounter) -> None:
        self.responses = responses
        self.not_found = not_found
        self.hits = hits
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > 65536:  # no sane request head is this long
                    self.transport.close()
                return
            head = self.buffer[:end]
            self.buffer = self.buffer[end + 4:]
            line_end = head.find(b"\r\n")
            request_line = head if line_end < 0 else head[:line_end]
            try:
                method, target, version = request_line.decode("latin-1").split(" ", 2)
            except ValueError:
                self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
                                     b"Connection: close\r\n\r\n")
                self.transport.close()
                return
            lowered = head.lower()
            length_at = lowered.find(b"\r\ncontent-length:")
            if length_at >= 0:  # skip a body we do not read
                value_end = lowered.find(b"\r\n", length_at + 2)
                try:
                    skip = int(lowered[length_at + 17:value_end if value_end > 0 else None].strip() or 0)
                except ValueError:
                    skip = 0
                self.buffer = self.buffer[skip:]
            path = target.split("?", 1)[0].split("#", 1)[0]
            full, head_only = self.responses.get(path, self.not_found)
            payload = head_only if method == "HEAD" else full
            self.transport.write(payload)
            self.hits.hit(target, len(payload))
            keep_alive = (b"connection: keep-alive" in lowered if version == "HTTP/1.0"
                          else b"connection: close" not in lowered)
            if not keep_alive:
                self.transport.close()
                return


class FastSiteServer:
    """Serves a :class:`FastSite` on an asyncio loop in the calling thread."""

    def __init__(self, site: FastSite, host: str = "127.0.0.1", port: int = 0) -> None:
        self.site = site
        self.hits = HitCounter(site)
        self.responses: dict[str, tuple[bytes, bytes]] = site.responses()
        self.responses[ROBOTS_PATH] = _response("200 OK", "text/plain", ROBOTS_TXT)
        self.not_found = _response("404 Not Found", "text/html; charset=utf-8",
                                   b"<!DOCTYPE html><html><head><title>Not found</title></head>"
                                   b"<body></body></html>")
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(2048)
        self.url = f"http://{host}:{self.sock.getsockname()[1]}"

    def page_sizes(self) -> list[int]:
        return self.site.page_sizes(self.responses)

    async def serve(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _HTTPProtocol(self.responses, self.not_found, self.hits),
                                          sock=self.sock, backlog=2048)
        async with server:
            await stop.wait()


def _answer_commands(loop: asyncio.AbstractEventLoop, server: FastSiteServer, stop: asyncio.Event) -> None:
    """The parent asks over stdin, one command a line, and reads one JSON line back."""

    async def run(command: str) -> dict[str, Any]:
        # on the loop's thread, so the counter is never read while it changes
        if command == "hits":
            return server.hits.summary()
        if command == "counts":
            return dict(server.hits.counts)
        if command == "reset":
            server.hits.reset()
            return {}
        return {"error": f"unknown command {command!r}"}

    for line in sys.stdin:
        answer = asyncio.run_coroutine_threadsafe(run(line.strip()), loop).result()
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    loop.call_soon_threadsafe(stop.set)


class FastSiteProcess(SiteProcess):
    """The fast site in a child process (so it never shares a GIL with a crawler)."""

    def __init__(self, pages: int, port: int = 0, *, small: bool = False) -> None:
        args = [sys.executable, "-m", "bench.fastsite", "--pages", str(pages), "--port", str(port)]
        if small:
            args.append("--small")
        self.pages = pages
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http://"):
            raise RuntimeError(f"the benchmark site did not start: {self.url!r}")

    def counts(self) -> dict[str, int]:
        return self._ask("counts")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fastsite", description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=int, default=5000)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--forever", action="store_true", help="ignore stdin; stop on SIGTERM or Ctrl-C")
    parser.add_argument("--small", action="store_true",
                        help="the small-page site (bench/smallsite.py: ~2 KB pages, some 5xx and redirects)")
    parser.add_argument("--describe", action="store_true",
                        help="print page size and link statistics and exit")
    args = parser.parse_args()
    # quiet under the harness (its stderr is the terminal); chatty when run by hand
    logging.basicConfig(level=logging.INFO if args.forever else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    started = time.monotonic()
    if args.small:
        from bench.smallsite import SmallSite

        site: FastSite = SmallSite(args.pages)
    else:
        site = FastSite(args.pages)
    server = FastSiteServer(site, port=args.port)
    if args.describe:
        sizes = sorted(server.page_sizes())
        links = [len(server.site.links(n)) for n in range(args.pages)]
        print(json.dumps({"pages": args.pages, "bytes_min": sizes[0], "bytes_median": sizes[len(sizes) // 2],
                          "bytes_max": sizes[-1], "bytes_total": sum(sizes),
                          "links_mean": sum(links) / len(links), "errors": len(site.error_paths),
                          "redirects": len(site.extra_paths),
                          "render_seconds": round(time.monotonic() - started, 2)}))
        return
    logger.info("%d pages rendered in %.1fs", args.pages, time.monotonic() - started)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    sys.stdout.write(server.url + "\n")
    sys.stdout.flush()
    if not args.forever:
        threading.Thread(target=_answer_commands, args=(loop, server, stop), daemon=True).start()
    loop.run_until_complete(server.serve(stop))


if __name__ == "__main__":
    main()
