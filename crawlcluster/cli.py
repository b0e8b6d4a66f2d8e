"""The ``crawlcluster`` command: a thin layer over the client API and the embedded crawl.

    crawlcluster crawl URL -o items.jsonl      one machine, nothing else running
    crawlcluster demo                          the same, on a bundled local site
    crawlcluster submit URL|pkg.mod:Spider     against a cluster (CRAWLCLUSTER_DATABASE_URL)
    crawlcluster status [PROJECT]
    crawlcluster results PROJECT --format jsonl|csv [-o FILE]
    crawlcluster pause|resume|cancel PROJECT
    crawlcluster initdb
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from crawlcluster.errors import CrawlClusterError

console = Console(stderr=True, soft_wrap=True)
FORMATS = ("jsonl", "csv")


def _format_for(output: str | None, fmt: str | None) -> str:
    if fmt:
        return fmt
    if output and Path(output).suffix.lower() == ".csv":
        return "csv"
    return "jsonl"


def _fail(exc: Exception) -> None:
    raise click.ClickException(str(exc))


def _stats_table(rows: list[tuple[str, dict[str, Any]]]) -> Table:
    table = Table(title="crawlcluster projects")
    for column in ("project", "status", "pending", "queued", "done", "failed", "cancelled", "items"):
        table.add_column(column, justify="left" if column in ("project", "status") else "right")
    for name, stats in rows:
        table.add_row(name, str(stats["status"]), *(str(stats[k]) for k in ("pending", "queued", "done", "failed", "cancelled", "items")))
    return table


@click.group()
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def main(verbose: int) -> None:
    """crawlcluster: a distributed web crawler on Celery, or one command on one machine."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _run_embedded(target: Any, *, output: str | None, fmt: str | None, max_pages: int | None,
                  max_depth: int | None, project: str | None, db: str | None, quiet: bool) -> None:
    from crawlcluster.embedded import run_embedded

    try:
        result = run_embedded(target, project=project, output=output, fmt=_format_for(output, fmt),
                              max_pages=max_pages, max_depth=max_depth, database_path=db, progress=not quiet)
    except CrawlClusterError as exc:
        _fail(exc)
    stats = result.stats
    console.print(
        f"[bold]{result.project}[/]: {stats['done']} done, {stats['failed']} failed, {stats['items']} items "
        f"in {result.elapsed_seconds:.1f}s ({result.pages_per_second:.1f} pages/s)"
        + (f"; {result.exported} items written to {output}" if output else ""))


@main.command()
@click.argument("urls", nargs=-1, required=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), help="Write items here (.jsonl or .csv).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), help="Output format (default: from the file name, else jsonl).")
@click.option("--max-pages", type=click.IntRange(min=1), help="Stop adding URLs after this many.")
@click.option("--max-depth", type=click.IntRange(min=0), help="Follow links at most this deep.")
@click.option("--project", help="Project name (default: the first URL's host).")
@click.option("--db", type=click.Path(dir_okay=False), help="Keep the frontier in this SQLite file (resumable).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def crawl(urls: tuple[str, ...], output, fmt, max_pages, max_depth, project, db, quiet) -> None:
    """Crawl URLS on this machine alone (no Redis, no Postgres) and write the items.

    URLS may instead be one spider import path, pkg.module:SpiderClass."""
    target: Any = urls[0] if len(urls) == 1 and "://" not in urls[0] and ":" in urls[0] else list(urls)
    _run_embedded(target, output=output, fmt=fmt, max_pages=max_pages, max_depth=max_depth,
                  project=project, db=db, quiet=quiet)


@main.command()
@click.option("--pages", default=60, show_default=True, type=click.IntRange(min=1), help="Pages in the demo site.")
@click.option("-o", "--output", default="demo-items.jsonl", show_default=True, type=click.Path(dir_okay=False))
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def demo(pages: int, output: str, quiet: bool) -> None:
    """Serve a small bundled site on 127.0.0.1 and crawl it, with no network at all."""
    from crawlcluster.demo import DemoSite

    with DemoSite(pages=pages, traps=True).serve() as server:
        console.print(f"demo site at {server.url}/ ({pages} pages plus a few broken links and redirects)")
        _run_embedded([server.url + "/"], output=output, fmt=None, max_pages=None, max_depth=None,
                      project="demo", db=None, quiet=quiet)
    with open(output, encoding="utf-8") as items:
        first = [json.loads(line) for _, line in zip(range(3), items)]
    for item in first:
        console.print_json(data=item)


@main.command("submit")
@click.argument("targets", nargs=-1, required=True)
@click.option("--project", help="Project name (default: the spider's name or the first URL's host).")
@click.option("--max-pages", type=click.IntRange(min=1))
@click.option("--max-depth", type=click.IntRange(min=0))
@click.option("--wait/--no-wait", default=False, help="Wait for the crawl to finish, with a progress bar.")
def submit_cmd(targets: tuple[str, ...], project, max_pages, max_depth, wait) -> None:
    """Submit URLs, or one spider import path (pkg.module:SpiderClass), to the cluster."""
    from crawlcluster.client import submit

    target: Any = targets[0] if len(targets) == 1 and "://" not in targets[0] else list(targets)
    try:
        crawl = submit(target, project, max_pages=max_pages, max_depth=max_depth)
        console.print(f"submitted project [bold]{crawl.project}[/]")
        if wait:
            crawl.wait(progress=True)
            console.print(_stats_table([(crawl.project, crawl.stats())]))
    except CrawlClusterError as exc:
        _fail(exc)


@main.command()
@click.argument("project", required=False)
def status(project: str | None) -> None:
    """Rows per state for PROJECT, or for every project."""
    from crawlcluster.client import Crawl, list_projects

    try:
        names = [project] if project else [p["name"] for p in list_projects()]
        rows = [(name, Crawl(name).stats()) for name in names]
    except CrawlClusterError as exc:
        _fail(exc)
    Console().print(_stats_table(rows))


@main.command()
@click.argument("project")
@click.option("--format", "fmt", type=click.Choice(FORMATS), help="jsonl (default) or csv.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), help="File to write (default: stdout).")
def results(project: str, fmt: str | None, output: str | None) -> None:
    """Export PROJECT's items, streamed from the database."""
    from crawlcluster.client import Crawl

    fmt = _format_for(output, fmt)
    try:
        crawl = Crawl(project)
        crawl.stats()  # a clear error for an unknown project
        if output:
            with open(output, "w", encoding="utf-8", newline="") as out:
                count = crawl.export(out, fmt)
            console.print(f"{count} items written to {output}")
        else:
            crawl.export(sys.stdout, fmt)
    except CrawlClusterError as exc:
        _fail(exc)


def _steer(project: str, action: str) -> None:
    from crawlcluster.client import Crawl

    try:
        getattr(Crawl(project), action)()
    except CrawlClusterError as exc:
        _fail(exc)
    console.print(f"{project}: {action} done")


@main.command()
@click.argument("project")
def pause(project: str) -> None:
    """Stop dispatching PROJECT's URLs (queued ones finish)."""
    _steer(project, "pause")


@main.command()
@click.argument("project")
def resume(project: str) -> None:
    """Dispatch PROJECT's URLs again."""
    _steer(project, "resume")


@main.command()
@click.argument("project")
def cancel(project: str) -> None:
    """Cancel PROJECT: its pending URLs become cancelled."""
    _steer(project, "cancel")


@main.command()
def initdb() -> None:
    """Create or upgrade the database schema (CRAWLCLUSTER_DATABASE_URL)."""
    from crawlcluster.db import get_engine, table_names

    try:
        engine = get_engine()
    except Exception as exc:  # noqa: BLE001 - say which database could not be reached
        raise click.ClickException(f"cannot initialise the database: {exc}") from None
    console.print(f"schema up to date in {engine.url.render_as_string(hide_password=True)}: {', '.join(table_names(engine))}")


if __name__ == "__main__":
    main()
