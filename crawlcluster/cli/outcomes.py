"""The commands that read what a project gathered: ``results`` (its items as .jsonl, .json
or .csv, streamed), ``screenshots``, ``failures`` (failed URLs and why) and ``retry``
(fetch them again)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from crawlcluster.cli.group import BadOutput, console, fail, output_and_mode
from crawlcluster.errors import CrawlClusterError
from crawlcluster.feeds import FEED_FORMATS


def _export_with_progress(crawl: Any, output: str | None, fmt: str, total: int, enabled: bool,
                          keep_formulas: bool = False, append: bool = False) -> int:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from crawlcluster.feeds import open_feed, write_all

    # a sentence for a bad path, before any read
    feed = open_feed(output, fmt, keep_formulas=keep_formulas, append=append) if output else None
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=console, disable=not enabled, transient=False) as progress:
        task = progress.add_task(f"{crawl.project} -> {fmt}", total=total)
        advance = lambda n: progress.advance(task, n)  # noqa: E731
        count = (write_all(feed, crawl.results, advance) if feed
                 else crawl.export(sys.stdout, fmt, advance, keep_formulas=keep_formulas))
        progress.update(task, completed=count, total=max(total, count))
    return count


@click.command()
@click.argument("project")
@click.option("--format", "fmt", type=click.Choice(tuple(FEED_FORMATS)),
              help="jsonl, json (one array), csv, xml or parquet (default: from -o's extension; jsonl on "
                   "stdout).")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="File to append to, as `crawl -o` (default: stdout).")
@click.option("-O", "--overwrite-output", "overwrite", type=click.Path(dir_okay=False),
              help="File to write afresh.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.option("--keep-formulas", is_flag=True,
              help="CSV: write cells that begin with = + - @ tab or CR verbatim (default: a leading ' so a "
                   "spreadsheet does not run crawled text as a formula).")
def results(project: str, fmt: str | None, output: str | None, overwrite: str | None, quiet: bool,
            keep_formulas: bool) -> None:
    """Export PROJECT's items, streamed from the database with a server-side cursor
    (memory stays flat however many items there are), with a progress bar on stderr.
    The formats are those of `crawl -o`: .jsonl, .json (a JSON array), .csv, .xml,
    .parquet, and .gz after any; -o appends where the format can, -O overwrites."""
    from crawlcluster.client import Crawl
    from crawlcluster.feeds import STREAM_FORMATS, FeedError, feed_format

    output, append = output_and_mode(output, overwrite)
    try:
        fmt = feed_format(output, fmt) if output else (fmt or "jsonl")
        if not output and fmt not in STREAM_FORMATS:
            raise FeedError(f"{fmt} is written to a file only: -o FILE.{fmt}")
    except FeedError as exc:
        raise BadOutput(str(exc)) from None
    try:
        crawl = Crawl(project)
        # also a clear error for an unknown project
        total = crawl.stats(figures=False, waiting=False)["items"]
        if output:
            count = _export_with_progress(crawl, output, fmt, total, enabled=not quiet,
                                          keep_formulas=keep_formulas, append=append)
            console.print(f"{count} items written to {output}")
        else:
            _export_with_progress(crawl, None, fmt, total, enabled=not quiet and console.is_terminal,
                                  keep_formulas=keep_formulas)
    except FeedError as exc:
        raise BadOutput(str(exc)) from None
    except CrawlClusterError as exc:
        fail(exc)


@click.command()
@click.argument("project")
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, writable=True),
              help="Directory for the PNGs and their index.jsonl.")
def screenshots(project: str, output: str) -> None:
    """Export PROJECT's screenshots (render option screenshot=True) as PNG files."""
    from crawlcluster.client import Crawl

    try:
        crawl = Crawl(project)
        crawl.stats()  # a clear error for an unknown project
        count = crawl.export_screenshots(output)
    except CrawlClusterError as exc:
        fail(exc)
    console.print(f"{count} screenshots written to {output}")




@click.command()
@click.argument("project")
@click.option("--kind", help="Only this kind: an error kind (timeout, connect, callback...), an HTTP status "
                             "(404) or a class of them (5xx).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1),
              help="Show at most this many.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per failed URL, for scripts.")
def failures(project: str, kind: str | None, limit: int, as_json: bool) -> None:
    """List PROJECT's failed URLs with their reasons, counts by kind first."""
    from crawlcluster.client import Crawl

    try:
        crawl = Crawl(project)
        counts = crawl.failure_counts()
        rows = crawl.failures(kind=kind, limit=limit)
    except CrawlClusterError as exc:
        fail(exc)
    if as_json:
        for row in rows:
            fields = ("url", "kind", "status_code", "error", "callback", "depth", "task_id")
            click.echo(json.dumps({k: row[k] for k in fields}, ensure_ascii=False))
        return
    out = Console(soft_wrap=False)
    total = sum(counts.values())
    if not total:
        out.print(f"{project}: no failed URLs")
        return
    out.print(f"{project}: {total:,} failed: "
              + ", ".join(f"{label} {count:,}" for label, count in counts.items()))
    if not rows:
        out.print(f"none of kind {kind!r}")
        return
    table = Table(box=None, pad_edge=False, show_edge=False)
    table.add_column("URL", overflow="fold", ratio=3)
    table.add_column("kind", no_wrap=True)
    table.add_column("status", justify="right", no_wrap=True)
    table.add_column("error", overflow="fold", ratio=4)
    for row in rows:
        table.add_row(row["url"], row["kind"], str(row["status_code"] or "-"), row["error"] or "")
    out.print(table)
    if len(rows) == limit and (kind or total > limit):
        out.print(f"(first {limit}; --limit N shows more)")
    out.print(f"`crawlcluster retry {project} --failed{' --kind ' + kind if kind else ''}` "
              "fetches them again")


@click.command()
@click.argument("project")
@click.option("--failed", "failed", is_flag=True, help="Fetch the failed URLs again.")
@click.option("--kind", help="Only failures of this kind (as `failures --kind` takes it).")
def retry(project: str, failed: bool, kind: str | None) -> None:
    """Fetch PROJECT's failed URLs again: they become pending with fresh retries and the
    project runs again (the scheduler dispatches them)."""
    from crawlcluster.client import Crawl

    if not failed:
        raise click.UsageError("say what to retry: `crawlcluster retry PROJECT --failed`")
    try:
        count = Crawl(project).retry_failed(kind=kind)
    except CrawlClusterError as exc:
        fail(exc)
    what = f"failed URLs{' of kind ' + repr(kind) if kind else ''}"
    if count:
        console.print(f"{project}: {count:,} {what} pending again; the project is running")
    else:
        console.print(f"{project}: no {what} to retry")


