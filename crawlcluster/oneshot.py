"""The one-command crawl as the ``crawl`` and ``demo`` commands run it: graceful Ctrl-C and
SIGTERM, the summary of what was crawled and what failed, how to resume, the exit code.

:func:`crawlcluster.embedded.run_embedded` does the crawl; this module is what a terminal
user sees around it, kept out of the CLI (``crawlcluster/cli/``) so that the command table stays
readable.
"""

from __future__ import annotations

import gc
import os
import shlex
import signal
import sys
import threading
from typing import Any

import click
from rich.console import Console

from crawlcluster.errors import CrawlClusterError

console = Console(stderr=True, soft_wrap=True)

EXIT_NO_ITEMS = 1
EXIT_SIGINT = 130
EXIT_SIGTERM = 143
FAILURE_REASON_CHARS = 160


CRAWL_EPILOG = """\b
Output: .jsonl/.jl/.ndjson (JSON lines), .json (one JSON array), .csv, .xml,
.parquet (pip install 'crawlcluster[parquet]'); .gz after any compresses. Items are
written and flushed as they are stored (a .parquet file at the end), so a crash keeps
what was stored. -o FILE appends to a .jsonl or .csv file and refuses a .json, .xml or
.parquet file that is not empty; -O FILE writes the file afresh. With --db, a second run
resumes the crawl: -o appends the items it stores, -O writes every item of the crawl.

\b
Ctrl-C or SIGTERM: stop dispatching, let pages in flight finish (--grace seconds),
write the items, print how to resume. A second Ctrl-C leaves at once.

\b
Exit codes:
  0    the crawl ended (some pages may have failed; see the summary)
  1    no page produced an item and some failed, or an error
  2    bad command line (unknown output format, missing output directory, ...)
  130  stopped by Ctrl-C (SIGINT); 143 stopped by SIGTERM
"""


class _BadOutput(click.ClickException):
    """An output file that cannot be written: one line, the usage error's exit code."""

    exit_code = 2


class _Stopper:
    """The first SIGINT or SIGTERM asks the crawl to stop (``event``); a second one leaves
    at once through :class:`~crawlcluster.embedded.StopNow`."""

    def __init__(self, grace_seconds: float) -> None:
        self.grace_seconds = grace_seconds
        self.event = threading.Event()
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_Stopper":
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, _frame: Any) -> None:
        from crawlcluster.embedded import StopNow

        name = signal.Signals(signum).name
        if self.event.is_set():
            raise StopNow(name)
        self.signal_name = name
        self.event.set()
        # os.write, not the console: a signal handler may run inside the console's own write
        os.write(2, (f"\n{name}: stopping; pages in flight get {self.grace_seconds:g}s to finish "
                     "(press Ctrl-C again to leave at once)\n").encode())


def _exit_code_for(signal_name: str | None) -> int:
    return EXIT_SIGTERM if signal_name == "SIGTERM" else EXIT_SIGINT


def _reason(row: dict[str, Any]) -> str:
    text = " ".join((row.get("error") or "").split())
    if len(text) > FAILURE_REASON_CHARS:
        text = text[:FAILURE_REASON_CHARS - 1] + "…"
    return text or row["kind"]


def _resume_command(db_path: str | None) -> str:
    """The command line that resumes this crawl: the same one with ``--db``, and ``-O``
    instead of ``-o`` for a file that cannot be appended to (it is written afresh, with
    every item of the crawl)."""
    from crawlcluster.feeds.base import NOT_APPENDABLE, FeedError, feed_format

    args = list(sys.argv[1:])
    for index, arg in enumerate(args[:-1]):
        if arg in ("-o", "--output"):
            try:
                whole = feed_format(args[index + 1], _format_arg(args)) in NOT_APPENDABLE
            except FeedError:
                whole = False
            if whole:
                args[index] = "-O"
    if db_path and "--db" not in args and not any(a.startswith("--db=") for a in args):
        args += ["--db", db_path]
    return shlex.join(["crawlcluster", *args])


def end_of_crawl_lines(stats: dict[str, Any]) -> list[str]:
    """The summary's lines of what Scrapy prints at a crawl's end: responses by status code,
    items dropped by reason, links filtered, bytes."""
    lines = []
    if stats.get("status_codes"):
        lines.append("responses by status: " + ", ".join(f"{code} {count}"
                                                         for code, count in stats["status_codes"].items()))
    if stats.get("items_dropped"):
        reasons = ", ".join(f"{reason} {count}" for reason, count in stats["dropped_reasons"].items())
        lines.append(f"items dropped by pipelines: {stats['items_dropped']} ({reasons})")
    if stats.get("links_offsite") or stats.get("links_duplicate"):
        lines.append(f"links filtered: {stats['links_offsite']} off-site, "
                     f"{stats['links_duplicate']} duplicate")
    if stats.get("bytes"):
        lines.append(f"{stats['bytes']:,} bytes downloaded")
    return lines


def _format_arg(args: list[str]) -> str | None:
    for index, arg in enumerate(args):
        if arg == "--format" and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith("--format="):
            return arg.split("=", 1)[1]
    return None


def print_summary(result: Any, output: str | None, db: str | None) -> None:
    """What the crawl did, what failed and why, where the rest is, how to resume."""
    pages = result.pages
    items = result.stats["items"]
    console.print(
        f"[bold]{result.project}[/]: {pages['done']} pages done, {pages['failed']} failed, {items} items "
        f"in {result.elapsed_seconds:.1f}s ({result.pages_per_second:.1f} pages/s)"
        + (f"; {result.exported} items written to {output}" if output else ""))
    others = [(result.stats.get("retries", 0), "retries"), (pages["disallowed"], "disallowed by robots.txt"),
              (pages["cancelled"], "cancelled"), (pages["pending"] + pages["queued"], "not crawled yet")]
    shown = ", ".join(f"{count} {label}" for count, label in others if count)
    if shown:
        console.print(f"  {shown}")
    for line in end_of_crawl_lines(result.stats):
        console.print(f"  {line}", markup=False, highlight=False)
    if result.failure_counts:
        kinds = ", ".join(f"{kind} {count}" for kind, count in result.failure_counts.items())
        console.print(f"  failed by kind: {kinds}")
        console.print("  first failures:")
        for row in result.failures:
            reason = _reason(row)
            label = "" if reason.startswith(row["kind"]) else f"[{row['kind']}] "
            console.print(f"    {row['url']}  {label}{reason}", markup=False, highlight=False)
        if result.database_path:
            console.print(f"  every failure: CRAWLCLUSTER_DATABASE_URL=sqlite:///{result.database_path} "
                          f"crawlcluster failures {result.project}", markup=False, highlight=False)
        else:
            console.print("  run with --db FILE to keep the frontier and list every failure with "
                          "`crawlcluster failures`", markup=False, highlight=False)
    if result.interrupted:
        where = (f"kept in {result.database_path}" if result.temporary_database
                 else f"in {result.database_path}")
        console.print(f"stopped by {result.interrupted}; the frontier is {where}. Resume with:",
                      highlight=False)
        console.print(f"  {_resume_command(result.database_path)}", markup=False, highlight=False)


def _announce_console(address: str) -> None:
    console.print(f"crawl console on {address} (this machine only; pause, resume and cancel act on "
                  "this crawl)", markup=False, highlight=False)


def console_of(web_port: int | None) -> Any:
    """With ``--web``: what starts the console beside the crawl (None without)."""
    if web_port is None:
        return None
    from crawlcluster.web.embedded import start_console

    return start_console(web_port, _announce_console)


def run_oneshot(target: Any, *, output: str | None, fmt: str | None, max_pages: int | None,
                  max_depth: int | None, project: str | None, db: str | None, quiet: bool,
                  settings: dict[str, Any] | None = None, spider_kwargs: dict[str, Any] | None = None,
                  grace_seconds: float | None = None, keep_formulas: bool = False,
                  web_port: int | None = None, append: bool = True) -> int:
    """Run the embedded crawl with graceful Ctrl-C/SIGTERM, print the summary; the exit code.
    ``append`` (``-o``) adds to the output file; otherwise (``-O``) it is written afresh."""
    from crawlcluster.embedded import STOP_GRACE_SECONDS, StopNow, run_embedded
    from crawlcluster.feeds import open_feed

    try:
        # checked before anything is fetched
        feed = open_feed(output, fmt, keep_formulas=keep_formulas, append=append) if output else None
    except CrawlClusterError as exc:
        raise _BadOutput(str(exc)) from None
    grace_seconds = STOP_GRACE_SECONDS if grace_seconds is None else grace_seconds
    with _Stopper(grace_seconds) as stopper:
        try:
            result = run_embedded(target, project=project, feed=feed, max_pages=max_pages,
                                  max_depth=max_depth, database_path=db, progress=not quiet,
                                  settings=settings, spider_kwargs=spider_kwargs, stop=stopper.event,
                                  stop_reason=lambda: stopper.signal_name,
                                  grace_seconds=grace_seconds, console=console_of(web_port))
        except StopNow as exc:
            kept = exc.database_path or db
            console.print(f"stopped at once by a second {exc}; the items stored so far are in "
                          f"{output or 'the database'}"
                          + (f" and the frontier in {kept}" if kept else ""), highlight=False)
            if kept:
                console.print("Resume with:", highlight=False)
                console.print(f"  {_resume_command(kept)}", markup=False, highlight=False)
            sys.stderr.flush()
            sys.stdout.flush()
            os._exit(_exit_code_for(str(exc)))  # the worker thread may be inside a page: do not wait for it
        except CrawlClusterError as exc:
            raise click.ClickException(str(exc)) from None
    print_summary(result, output, db)
    # everything kept is committed, the output file closed and the engines disposed: the
    # interpreter's last garbage collection over the whole heap (Celery, SQLAlchemy, the
    # crawl's objects) took 0.4 s and more after the last page; frozen objects are skipped
    gc.freeze()
    if result.interrupted:
        code = _exit_code_for(result.interrupted)
        if not result.worker_finished:
            # a page still hangs in a worker thread, which the interpreter would wait for
            # at exit; everything kept is committed and the output file is closed
            sys.stderr.flush()
            sys.stdout.flush()
            os._exit(code)
        return code
    if result.stats["items"] == 0 and result.pages["failed"] > 0:
        return EXIT_NO_ITEMS
    return 0
