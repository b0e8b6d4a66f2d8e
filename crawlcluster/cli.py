"""The ``crawlcluster`` command: a thin layer over the client API and the embedded crawl.

    crawlcluster crawl URL -o items.jsonl      one machine, nothing else running
    crawlcluster demo                          the same, on a bundled local site
    crawlcluster submit URL|pkg.mod:Spider     against a cluster (CRAWLCLUSTER_DATABASE_URL)
    crawlcluster status [PROJECT]
    crawlcluster results PROJECT [-o FILE.jsonl|.json|.csv]
    crawlcluster pause|resume|cancel PROJECT
    crawlcluster failures PROJECT [--kind KIND]   failed URLs and why
    crawlcluster retry PROJECT --failed           fetch the failed URLs again
    crawlcluster initdb
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from crawlcluster.embedded import STOP_GRACE_SECONDS
from crawlcluster.errors import CrawlClusterError
from crawlcluster.feeds import FEED_FORMATS
from crawlcluster.oneshot import CRAWL_EPILOG, run_oneshot

console = Console(stderr=True, soft_wrap=True)

def _fail(exc: Exception) -> None:
    raise click.ClickException(str(exc))


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("crawlcluster")
    except PackageNotFoundError:  # run from a checkout that is not installed
        from crawlcluster import __version__

        return __version__


def _set_verbosity(ctx: click.Context, _param: click.Parameter, value: int) -> int:
    """``-v`` before or after the subcommand: the most given anywhere wins."""
    root = ctx.find_root()
    total = max(value or 0, root.meta.get("crawlcluster.verbose", 0))
    root.meta["crawlcluster.verbose"] = total
    level = logging.WARNING - 10 * min(total, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().setLevel(level)
    return total


def _verbose_option() -> click.Option:
    return click.Option(["-v", "--verbose"], count=True, expose_value=False, is_eager=True, callback=_set_verbosity,
                        help="More logging (-v info, -vv debug); before or after the command.")


class _Commands(click.Group):
    """The command group; every command also takes -v/-vv after its name."""

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        if not any(isinstance(p, click.Option) and "--verbose" in p.opts for p in cmd.params):
            cmd.params.append(_verbose_option())
        super().add_command(cmd, name)


@click.group(cls=_Commands)
@click.version_option(_package_version(), "--version", prog_name="crawlcluster", message="%(prog)s %(version)s")
@click.option("-v", "--verbose", count=True, expose_value=False, is_eager=True, callback=_set_verbosity,
              help="More logging (-v info, -vv debug).")
def main() -> None:
    """crawlcluster: a distributed web crawler on Celery, or one command on one machine."""


class RetryDelays(click.ParamType):
    """``SECONDS[,SECONDS...]``: the delay before each retry; the last one repeats."""

    name = "seconds[,seconds...]"

    def convert(self, value: Any, param: Any, ctx: Any) -> list[float]:
        if isinstance(value, list):
            return value
        from crawlcluster.settings import seconds_list

        try:
            return seconds_list(str(value))
        except ValueError as exc:
            self.fail(f"{value!r}: {exc}", param, ctx)


def _retry_settings(retries: int | None, retry_delay: list[float] | None) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if retries is not None:
        values["retries"] = retries
    if retry_delay is not None:
        values["retry_delays"] = retry_delay
    return values




@main.command(epilog=CRAWL_EPILOG)
@click.argument("urls", nargs=-1, required=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Write items here as they are stored: .jsonl, .json or .csv.")
@click.option("--format", "fmt", type=click.Choice(("jsonl", "json", "csv")),
              help="Output format (default: from the file's extension).")
@click.option("--max-pages", type=click.IntRange(min=1), help="Stop adding URLs after this many.")
@click.option("--max-depth", type=click.IntRange(min=0), help="Follow links at most this deep.")
@click.option("--project", help="Project name (default: the first URL's host).")
@click.option("--db", type=click.Path(dir_okay=False), help="Keep the frontier in this SQLite file (resumable).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.option("--per-host", type=click.IntRange(min=1), help="Requests in flight per host (default 8).")
@click.option("--delay", type=click.FloatRange(min=0), help="Seconds between two requests to one host (default 0).")
@click.option("--ignore-robots", is_flag=True, help="Do not fetch or obey robots.txt.")
@click.option("--render", type=click.Choice(("never", "auto", "always")),
              help="Link spider: load pages in headless Chromium always, only when a page looks empty "
                   "without JavaScript (auto), or never (default).")
@click.option("--retries", type=click.IntRange(min=0), help="Retries of a failed fetch (5xx, timeout, ...).")
@click.option("--retry-delay", type=RetryDelays(), help="Seconds before each retry, e.g. 2,10,30 (the last repeats).")
@click.option("--grace", "grace_seconds", type=click.FloatRange(min=0), show_default=True, default=STOP_GRACE_SECONDS,
              help="After Ctrl-C or SIGTERM, seconds that pages in flight may take to finish.")
def crawl(urls: tuple[str, ...], output, fmt, max_pages, max_depth, project, db, quiet, per_host, delay,
          ignore_robots, render, retries, retry_delay, grace_seconds) -> None:
    """Crawl URLS on this machine alone (no Redis, no Postgres) and write the items.

    URLS may instead be one spider import path, pkg.module:SpiderClass."""
    target: Any = urls[0] if len(urls) == 1 and "://" not in urls[0] and ":" in urls[0] else list(urls)
    settings: dict[str, Any] = _retry_settings(retries, retry_delay)
    if per_host is not None:
        settings["per_host_concurrency"] = per_host
    if delay is not None:
        settings["per_host_delay"] = delay
    if ignore_robots:
        settings["obey_robots"] = False
    spider_kwargs: dict[str, Any] | None = None
    if render is not None:
        if not isinstance(target, list):
            raise click.UsageError("--render is for the link spider (URLs); a spider sets its own `render`")
        spider_kwargs = {"render": {"never": False, "auto": "auto", "always": True}[render]}
        if render != "never":
            from crawlcluster.app import render_unavailable
            from crawlcluster.settings import current

            missing = render_unavailable(chromium_path=current().chromium_path)
            if missing:
                raise click.ClickException(f"{missing}, or crawl with --render never")
    code = run_oneshot(target, output=output, fmt=fmt, max_pages=max_pages, max_depth=max_depth,
                         project=project, db=db, quiet=quiet, settings=settings, spider_kwargs=spider_kwargs,
                         grace_seconds=grace_seconds)
    click.get_current_context().exit(code)


@main.command()
@click.option("--pages", default=60, show_default=True, type=click.IntRange(min=1), help="Pages in the demo site.")
@click.option("-o", "--output", default="demo-items.jsonl", show_default=True, type=click.Path(dir_okay=False))
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def demo(pages: int, output: str, quiet: bool) -> None:
    """Serve a small bundled site on 127.0.0.1 and crawl it, with no network at all."""
    from crawlcluster.devtools.demo_site import DemoSite

    with DemoSite(pages=pages, traps=True, retry_traps=True).serve() as server:
        console.print(f"demo site at {server.url}/ ({pages} pages plus a few broken links and redirects)")
        code = run_oneshot([server.url + "/"], output=output, fmt=None, max_pages=None, max_depth=None,
                             project="demo", db=None, quiet=quiet)
    if code == 0 and output.lower().endswith((".jsonl", ".jl", ".ndjson")):
        with open(output, encoding="utf-8") as items:
            first = [json.loads(line) for _, line in zip(range(3), items)]
        for item in first:
            console.print_json(data=item)
    click.get_current_context().exit(code)


@main.command("submit")
@click.argument("targets", nargs=-1, required=True)
@click.option("--project", help="Project name (default: the spider's name or the first URL's host).")
@click.option("--max-pages", type=click.IntRange(min=1))
@click.option("--max-depth", type=click.IntRange(min=0))
@click.option("--wait/--no-wait", default=False, help="Wait for the crawl to finish, with a progress bar.")
@click.option("--replace-spider", is_flag=True,
              help="Let the submitted spider (or the link spider, for URLs) replace the project's own.")
@click.option("--retries", type=click.IntRange(min=0), help="Retries of a failed fetch (5xx, timeout, ...).")
@click.option("--retry-delay", type=RetryDelays(), help="Seconds before each retry, e.g. 2,10,30 (the last repeats).")
def submit_cmd(targets: tuple[str, ...], project, max_pages, max_depth, wait, replace_spider, retries,
               retry_delay) -> None:
    """Submit URLs, or one spider import path (pkg.module:SpiderClass), to the cluster.

    URLs added to an existing project are crawled by that project's spider; a URL that
    failed before is fetched again."""
    from crawlcluster.client import submit

    target: Any = targets[0] if len(targets) == 1 and "://" not in targets[0] else list(targets)
    try:
        crawl = submit(target, project, max_pages=max_pages, max_depth=max_depth, replace_spider=replace_spider,
                       settings=_retry_settings(retries, retry_delay) or None)
        console.print(f"submitted project [bold]{crawl.project}[/]")
        if wait:
            crawl.wait(progress=True)
            from crawlcluster.dashboard import projects_table

            console.print(projects_table([(crawl.project, crawl.stats())]))
    except CrawlClusterError as exc:
        _fail(exc)


@main.command()
@click.argument("project", required=False)
@click.option("--watch", is_flag=True, help="Redraw every --interval seconds until Ctrl-C.")
@click.option("--interval", default=2.0, show_default=True, type=click.FloatRange(min=0.2))
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON instead of tables.")
def status(project: str | None, watch: bool, interval: float, as_json: bool) -> None:
    """Rows per state, pace, ETA and cost for PROJECT (with its busiest hosts), or for every project."""
    from rich.live import Live

    from crawlcluster.client import Crawl, list_projects
    from crawlcluster.dashboard import project_detail, projects_table

    def render() -> Any:
        names = [project] if project else [p["name"] for p in list_projects()]
        rows = [(name, Crawl(name).stats()) for name in names]
        if as_json:
            return json.dumps({name: stats for name, stats in rows}, indent=2, default=str)
        if project:
            return project_detail(project, rows[0][1], Crawl(project).host_stats())
        return projects_table(rows)

    try:
        if not watch:
            out = render()
            if as_json:
                click.echo(out)
            else:
                Console().print(out)
            return
        with Live(render(), console=Console(), refresh_per_second=4) as live:
            while True:
                time.sleep(interval)
                live.update(render())
    except CrawlClusterError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        pass


def _export_with_progress(crawl: Any, output: str | None, fmt: str, total: int, enabled: bool) -> int:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from crawlcluster.feeds import open_feed, write_all

    feed = open_feed(output, fmt) if output else None  # a sentence for a bad path, before any read
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=console, disable=not enabled, transient=False) as progress:
        task = progress.add_task(f"{crawl.project} -> {fmt}", total=total)
        advance = lambda n: progress.advance(task, n)  # noqa: E731
        count = write_all(feed, crawl.results, advance) if feed else crawl.export(sys.stdout, fmt, advance)
        progress.update(task, completed=count, total=max(total, count))
    return count


@main.command()
@click.argument("project")
@click.option("--format", "fmt", type=click.Choice(tuple(FEED_FORMATS)),
              help="jsonl, json (one array) or csv (default: from -o's extension; jsonl on stdout).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="File to write (default: stdout).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def results(project: str, fmt: str | None, output: str | None, quiet: bool) -> None:
    """Export PROJECT's items, streamed from the database with a server-side cursor
    (memory stays flat however many items there are), with a progress bar on stderr.
    The formats are those of `crawl -o`: .jsonl, .json (a JSON array) or .csv."""
    from crawlcluster.client import Crawl
    from crawlcluster.feeds import feed_format

    try:
        fmt = feed_format(output, fmt) if output else (fmt or "jsonl")
        crawl = Crawl(project)
        total = crawl.stats(figures=False, waiting=False)["items"]  # also a clear error for an unknown project
        if output:
            count = _export_with_progress(crawl, output, fmt, total, enabled=not quiet)
            console.print(f"{count} items written to {output}")
        else:
            _export_with_progress(crawl, None, fmt, total, enabled=not quiet and console.is_terminal)
    except CrawlClusterError as exc:
        _fail(exc)


@main.command()
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
        _fail(exc)
    console.print(f"{count} screenshots written to {output}")


@main.command("render-stats")
def render_stats_cmd() -> None:
    """Per render worker process: pages, recycles, crashes, hung kills, browser memory."""
    from crawlcluster.client import render_stats

    try:
        rows = render_stats()
    except CrawlClusterError as exc:
        _fail(exc)
    table = Table("worker", "browser pid", "pages", "failed", "launched", "recycles", "crashes", "hung kills",
                  "PSS MiB", "summed RSS MiB")
    for row in rows:
        table.add_row(row["worker"], str(row["browser_pid"] or "-"), str(row["pages_rendered"]),
                      str(row["render_failures"]), str(row["browsers_launched"]), str(row["recycles"]),
                      str(row["crashes"]), str(row["hung_kills"]),
                      f"{(row['browser_pss_bytes'] or 0) / 2**20:.0f}", f"{(row['browser_rss_bytes'] or 0) / 2**20:.0f}")
    console.print(table)


def _steer(project: str, action: str) -> Any:
    from crawlcluster.client import Crawl

    try:
        return getattr(Crawl(project), action)()
    except CrawlClusterError as exc:
        _fail(exc)


@main.command()
@click.argument("project")
def pause(project: str) -> None:
    """Stop dispatching PROJECT's URLs (queued ones finish)."""
    _steer(project, "pause")
    console.print(f"{project}: paused; `crawlcluster resume {project}` dispatches it again")


@main.command()
@click.argument("project")
def resume(project: str) -> None:
    """Dispatch PROJECT's URLs again, after a pause or a cancel (cancelled URLs become pending)."""
    from crawlcluster.client import Crawl

    reopened = _steer(project, "resume")
    try:
        stats = Crawl(project).stats(figures=False, waiting=False)
    except CrawlClusterError as exc:
        _fail(exc)
    open_rows = stats["pending"] + stats["queued"]
    if reopened:
        console.print(f"{project}: resumed {reopened:,} cancelled {'URL' if reopened == 1 else 'URLs'}; "
                      f"{open_rows:,} pending or queued")
    elif open_rows:
        console.print(f"{project}: running again; {open_rows:,} pending or queued")
    else:
        console.print(f"{project}: nothing to resume: no URL is pending, queued or cancelled "
                      f"({stats['done']:,} done, {stats['failed']:,} failed; "
                      f"`crawlcluster retry {project} --failed` fetches the failed ones again)")


@main.command()
@click.argument("project")
def cancel(project: str) -> None:
    """Cancel PROJECT: its pending URLs become cancelled (`resume` brings them back)."""
    from crawlcluster.client import Crawl

    _steer(project, "cancel")
    cancelled = Crawl(project).stats(figures=False, waiting=False)["cancelled"]
    console.print(f"{project}: cancelled; {cancelled:,} URLs cancelled, `crawlcluster resume {project}` fetches "
                  "those this cancel stopped (not those a request's cancel=True cancelled)")


@main.command()
@click.argument("project")
@click.option("--kind", help="Only this kind: an error kind (timeout, connect, callback...), an HTTP status "
                             "(404) or a class of them (5xx).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1), help="Show at most this many.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per failed URL, for scripts.")
def failures(project: str, kind: str | None, limit: int, as_json: bool) -> None:
    """List PROJECT's failed URLs with their reasons, counts by kind first."""
    from crawlcluster.client import Crawl

    try:
        crawl = Crawl(project)
        counts = crawl.failure_counts()
        rows = crawl.failures(kind=kind, limit=limit)
    except CrawlClusterError as exc:
        _fail(exc)
    if as_json:
        for row in rows:
            click.echo(json.dumps({k: row[k] for k in ("url", "kind", "status_code", "error", "callback", "depth",
                                                       "task_id")}, ensure_ascii=False))
        return
    out = Console(soft_wrap=False)
    total = sum(counts.values())
    if not total:
        out.print(f"{project}: no failed URLs")
        return
    out.print(f"{project}: {total:,} failed: " + ", ".join(f"{label} {count:,}" for label, count in counts.items()))
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
    out.print(f"`crawlcluster retry {project} --failed{' --kind ' + kind if kind else ''}` fetches them again")


@main.command()
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
        _fail(exc)
    what = f"failed URLs{' of kind ' + repr(kind) if kind else ''}"
    if count:
        console.print(f"{project}: {count:,} {what} pending again; the project is running")
    else:
        console.print(f"{project}: no {what} to retry")


@main.command()
def initdb() -> None:
    """Create or upgrade the database schema (CRAWLCLUSTER_DATABASE_URL)."""
    from crawlcluster.db import open_database, table_names

    try:
        engine = open_database()
    except CrawlClusterError as exc:  # unreachable or missing: the message says what to do
        raise click.ClickException(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - say which database could not be initialised
        raise click.ClickException(f"cannot initialise the database: {exc}") from None
    console.print(f"schema up to date in {engine.url.render_as_string(hide_password=True)}: {', '.join(table_names(engine))}")


@main.command()
@click.option("--port", default=9808, show_default=True, type=click.IntRange(1, 65535))
@click.option("--address", default="127.0.0.1", show_default=True, help="0.0.0.0 to let Prometheus scrape from elsewhere.")
def metrics(port: int, address: str) -> None:
    """Serve Prometheus metrics of the whole cluster (queues, rows, pages, bytes, latency)."""
    from crawlcluster.metrics import serve

    serve(port, address)
    console.print(f"metrics on http://{address}:{port}/metrics (Ctrl-C to stop)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Duration(click.ParamType):
    """``90``, ``45s``, ``30m``, ``1h`` or ``2d``, as seconds."""

    name = "duration"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        text = str(value).strip().lower()
        unit = DURATION_UNITS.get(text[-1:], None)
        number = text[:-1] if unit else text
        try:
            seconds = float(number) * (unit or 1)
        except ValueError:
            self.fail(f"{value!r} is not a duration; use seconds or a number with s, m, h or d (e.g. 1h)", param, ctx)
        if seconds <= 0:
            self.fail(f"{value!r} must be longer than zero", param, ctx)
        return seconds


@main.command("set")
@click.argument("project")
@click.argument("assignments", nargs=-1, required=True)
def set_cmd(project: str, assignments: tuple[str, ...]) -> None:
    """Change PROJECT's settings while it runs, e.g. `set PROJECT rate=5 burst=10 per_host_concurrency=4`.

    Settings: rate, burst, queue_limit, per_host_concurrency, per_host_delay, obey_robots,
    priority, retries, retry_delays, retry_policy (quick or recurring), age, auto_recrawl.
    Retry settings win over the spider's; they apply to rows added after the change."""
    from crawlcluster.client import Crawl

    values: dict[str, str] = {}
    for assignment in assignments:
        name, sep, value = assignment.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{assignment!r} is not NAME=VALUE", param_hint="ASSIGNMENTS")
        values[name.strip()] = value.strip()
    try:
        current = Crawl(project).configure(**values)
    except CrawlClusterError as exc:
        _fail(exc)
    changed = ", ".join(f"{k}={current.get(k)}" for k in values)
    console.print(f"{project}: {changed}")


@main.command()
@click.argument("project")
@click.option("--every", "every", type=Duration(), required=True, help="Interval: 30m, 1h, 1d ...")
def schedule(project: str, every: float) -> None:
    """Re-seed PROJECT's start URLs on a schedule (beat sends them; URLs whose age has not
    passed are not fetched again)."""
    from crawlcluster.client import Crawl

    try:
        Crawl(project).schedule(every)
    except CrawlClusterError as exc:
        _fail(exc)
    console.print(f"{project}: start URLs re-seeded every {every:g}s")


@main.command()
@click.argument("project")
@click.option("--after", type=Duration(), help="Keep the data this long first (default: a day).")
def delete(project: str, after: float | None) -> None:
    """Cancel PROJECT and remove its rows and results after a delay (`resume` or a new submit undoes it)."""
    from crawlcluster.client import Crawl

    try:
        when = Crawl(project).delete(after)
    except CrawlClusterError as exc:
        _fail(exc)
    console.print(f"{project}: cancelled; its rows and results are removed at "
                  f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(when))} UTC")


if __name__ == "__main__":
    main()
