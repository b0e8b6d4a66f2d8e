"""The commands that crawl on this machine alone: ``crawl`` (URLs or a spider, no Redis, no
Postgres) and ``demo`` (the same, on the bundled demo site); the run itself, its Ctrl-C and
its exit codes are :mod:`crawlcluster.oneshot`'s."""

from __future__ import annotations

import json
from typing import Any

import click

from crawlcluster.cli.arguments import settings_of, spider_arguments, spider_kwargs, spider_target
from crawlcluster.cli.group import RetryDelays, console, output_and_mode, retry_settings
from crawlcluster.embedded import STOP_GRACE_SECONDS
from crawlcluster.feeds import FEED_FORMATS
from crawlcluster.oneshot import CRAWL_EPILOG, run_oneshot

# the console's port with --web, as `crawlcluster web`'s
WEB_PORT = 5050


@click.command(epilog=CRAWL_EPILOG)
@click.argument("urls", nargs=-1, required=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Append items to this file as they are stored: .jsonl, .json, .csv, .xml or .parquet, "
                   ".gz after any to compress (.json, .xml and .parquet files cannot be appended to: -O).")
@click.option("-O", "--overwrite-output", "overwrite", type=click.Path(dir_okay=False),
              help="As -o, but write the file afresh.")
@click.option("--format", "fmt", type=click.Choice(tuple(FEED_FORMATS)),
              help="Output format (default: from the file's extension).")
@click.option("--keep-formulas", is_flag=True,
              help="CSV: write cells that begin with = + - @ tab or CR verbatim (default: a leading ' so a "
                   "spreadsheet does not run crawled text as a formula).")
@click.option("--max-pages", type=click.IntRange(min=1), help="Stop adding URLs after this many.")
@click.option("--max-depth", type=click.IntRange(min=0), help="Follow links at most this deep.")
@click.option("--project", help="Project name (default: the first URL's host).")
@click.option("--db", type=click.Path(dir_okay=False),
              help="Keep the frontier in this SQLite file (resumable).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.option("--per-host", type=click.IntRange(min=1), help="Requests in flight per host (default 8).")
@click.option("--delay", type=click.FloatRange(min=0),
              help="Seconds between two requests to one host (default 0).")
@click.option("--ignore-robots", is_flag=True, help="Do not fetch or obey robots.txt.")
@click.option("--render", type=click.Choice(("never", "auto", "always")),
              help="Link spider: load pages in headless Chromium always, only when a page looks empty "
                   "without JavaScript (auto), or never (default).")
@click.option("--retries", type=click.IntRange(min=0), help="Retries of a failed fetch (5xx, timeout, ...).")
@click.option("--retry-delay", type=RetryDelays(),
              help="Seconds before each retry, e.g. 2,10,30 (the last repeats).")
@click.option("--allow-private", "allow_private", multiple=True, metavar="HOST",
              help="Let URLs found later reach this private host, host:port, address or network "
                   "(repeatable); the start URLs' hosts are trusted already.")
@click.option("--grace", "grace_seconds", type=click.FloatRange(min=0), show_default=True,
              default=STOP_GRACE_SECONDS,
              help="After Ctrl-C or SIGTERM, seconds that pages in flight may take to finish.")
@click.option("--web", "web", is_flag=True,
              help="Serve the crawl console for this crawl on 127.0.0.1 while it runs.")
@click.option("--web-port", type=click.IntRange(0, 65535), default=None,
              help="The console's port with --web (default 5050; 0: any free port).")
@spider_arguments
def crawl(urls: tuple[str, ...], output, overwrite, fmt, keep_formulas, max_pages, max_depth, project, db,
          quiet, per_host, delay, ignore_robots, render, retries, retry_delay, allow_private,
          grace_seconds, web, web_port, spider_args, setting_args) -> None:
    """Crawl URLS on this machine alone (no Redis, no Postgres) and write the items.

    URLS may instead be one spider import path, pkg.module:SpiderClass (the current directory
    is importable), or a Python file holding one spider, path/to/spider.py (as scrapy runspider)."""
    output, append = output_and_mode(output, overwrite)
    target: Any = spider_target(urls, files=True)
    assigned = settings_of(setting_args, this_machine=True)
    max_pages = max_pages if max_pages is not None else assigned.max_pages
    max_depth = max_depth if max_depth is not None else assigned.max_depth
    # the options named here win over the same settings given with -s
    settings: dict[str, Any] = {**assigned.project, **retry_settings(retries, retry_delay)}
    if per_host is not None:
        settings["per_host_concurrency"] = per_host
    if delay is not None:
        settings["per_host_delay"] = delay
    if ignore_robots:
        settings["obey_robots"] = False
    if allow_private:
        settings["allow_private"] = list(allow_private)
    arguments: dict[str, Any] | None = spider_kwargs(spider_args) or None
    if render is not None:
        if not isinstance(target, list):
            raise click.UsageError("--render is for the link spider (URLs); a spider sets its own `render`")
        arguments = {**(arguments or {}), "render": {"never": False, "auto": "auto", "always": True}[render]}
        if render != "never":
            from crawlcluster.app import render_unavailable
            from crawlcluster.settings import current

            missing = render_unavailable(chromium_path=current().chromium_path)
            if missing:
                raise click.ClickException(f"{missing}, or crawl with --render never")
    if web_port is not None and not web:
        raise click.UsageError("--web-port is for --web")
    code = run_oneshot(target, output=output, fmt=fmt, max_pages=max_pages, max_depth=max_depth,
                         project=project, db=db, quiet=quiet, settings=settings, spider_kwargs=arguments,
                         grace_seconds=grace_seconds, keep_formulas=keep_formulas, append=append,
                         web_port=(WEB_PORT if web_port is None else web_port) if web else None)
    click.get_current_context().exit(code)


@click.command()
@click.option("--pages", default=60, show_default=True, type=click.IntRange(min=1),
              help="Pages in the demo site.")
@click.option("-o", "--output", default="demo-items.jsonl", show_default=True,
              type=click.Path(dir_okay=False))
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def demo(pages: int, output: str, quiet: bool) -> None:
    """Serve a small bundled site on 127.0.0.1 and crawl it, with no network at all."""
    from crawlcluster.devtools.demo_site import DemoSite

    with DemoSite(pages=pages, traps=True, retry_traps=True).serve() as server:
        console.print(f"demo site at {server.url}/ ({pages} pages plus a few broken links and redirects)")
        code = run_oneshot([server.url + "/"], output=output, fmt=None, max_pages=None, max_depth=None,
                             project="demo", db=None, quiet=quiet, append=False)
    if code == 0 and output.lower().endswith((".jsonl", ".jl", ".ndjson")):
        with open(output, encoding="utf-8") as items:
            first = [json.loads(line) for _, line in zip(range(3), items)]
        for item in first:
            console.print_json(data=item)
    click.get_current_context().exit(code)

