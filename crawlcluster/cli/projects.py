"""The commands that steer a project on the cluster: ``submit``, ``status``, ``pause``,
``resume``, ``cancel``, ``set``, ``schedule`` and ``delete``, each a thin call of
:class:`crawlcluster.client.Crawl`."""

from __future__ import annotations

import json
import time
from typing import Any

import click
from rich.console import Console

from crawlcluster.cli.arguments import settings_of, spider_arguments, spider_kwargs, spider_target
from crawlcluster.cli.group import Duration, RetryDelays, console, fail, retry_settings
from crawlcluster.errors import CrawlClusterError


@click.command("submit")
@click.argument("targets", nargs=-1, required=True)
@click.option("--project", help="Project name (default: the spider's name or the first URL's host).")
@click.option("--max-pages", type=click.IntRange(min=1))
@click.option("--max-depth", type=click.IntRange(min=0))
@click.option("--wait/--no-wait", default=False, help="Wait for the crawl to finish, with a progress bar.")
@click.option("--replace-spider", is_flag=True,
              help="Let the submitted spider (or the link spider, for URLs) replace the project's own.")
@click.option("--retries", type=click.IntRange(min=0), help="Retries of a failed fetch (5xx, timeout, ...).")
@click.option("--retry-delay", type=RetryDelays(),
              help="Seconds before each retry, e.g. 2,10,30 (the last repeats).")
@click.option("--allow-private", "allow_private", multiple=True, metavar="HOST",
              help="Let URLs found later reach this private host, host:port, address or network "
                   "(repeatable); the start URLs' hosts are trusted already.")
@spider_arguments
def submit_cmd(targets: tuple[str, ...], project, max_pages, max_depth, wait, replace_spider, retries,
               retry_delay, allow_private, spider_args, setting_args) -> None:
    """Submit URLs, or one spider import path (pkg.module:SpiderClass), to the cluster.

    URLs added to an existing project are crawled by that project's spider; a URL that
    failed before is fetched again. The current directory is importable for the spider."""
    from crawlcluster.submission import submit

    target: Any = spider_target(targets, files=False)
    assigned = settings_of(setting_args, this_machine=False)
    settings = {**assigned.project, **retry_settings(retries, retry_delay)}
    try:
        crawl = submit(target, project, max_pages=max_pages if max_pages is not None else assigned.max_pages,
                       max_depth=max_depth if max_depth is not None else assigned.max_depth,
                       replace_spider=replace_spider, settings=settings or None,
                       spider_kwargs=spider_kwargs(spider_args) or None,
                       allow_private=list(allow_private) or None)
        console.print(f"submitted project [bold]{crawl.project}[/]")
        if wait:
            crawl.wait(progress=True)
            from crawlcluster.dashboard import projects_table

            console.print(projects_table([(crawl.project, crawl.stats())]))
    except CrawlClusterError as exc:
        fail(exc)


@click.command()
@click.argument("project", required=False)
@click.option("--watch", is_flag=True, help="Redraw every --interval seconds until Ctrl-C.")
@click.option("--interval", default=2.0, show_default=True, type=click.FloatRange(min=0.2))
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON instead of tables.")
def status(project: str | None, watch: bool, interval: float, as_json: bool) -> None:
    """Rows per state, pace, ETA and cost for PROJECT (with its busiest hosts), or for every project."""
    from rich.live import Live

    from crawlcluster.client import Crawl, list_projects
    from crawlcluster.dashboard import project_detail, projects_table
    from crawlcluster.overview import every_project_stats

    def render() -> Any:
        if project or as_json:
            names = [project] if project else [p["name"] for p in list_projects()]
            rows = [(name, Crawl(name).stats()) for name in names]
        else:  # every project's figures at once (a fixed few statements, whatever their number)
            rows = every_project_stats()
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
        fail(exc)
    except KeyboardInterrupt:
        pass




def _steer(project: str, action: str) -> Any:
    from crawlcluster.client import Crawl

    try:
        return getattr(Crawl(project), action)()
    except CrawlClusterError as exc:
        fail(exc)


@click.command()
@click.argument("project")
def pause(project: str) -> None:
    """Stop dispatching PROJECT's URLs (queued ones finish)."""
    _steer(project, "pause")
    console.print(f"{project}: paused; `crawlcluster resume {project}` dispatches it again")


@click.command()
@click.argument("project")
def resume(project: str) -> None:
    """Dispatch PROJECT's URLs again, after a pause or a cancel (cancelled URLs become pending)."""
    from crawlcluster.client import Crawl

    reopened = _steer(project, "resume")
    try:
        stats = Crawl(project).stats(figures=False, waiting=False)
    except CrawlClusterError as exc:
        fail(exc)
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


@click.command()
@click.argument("project")
def cancel(project: str) -> None:
    """Cancel PROJECT: its pending URLs become cancelled (`resume` brings them back)."""
    from crawlcluster.client import Crawl

    _steer(project, "cancel")
    cancelled = Crawl(project).stats(figures=False, waiting=False)["cancelled"]
    console.print(f"{project}: cancelled; {cancelled:,} URLs cancelled, "
                  f"`crawlcluster resume {project}` fetches those this cancel stopped "
                  "(not those a request's cancel=True cancelled)")


@click.command("set")
@click.argument("project")
@click.argument("assignments", nargs=-1, required=True)
def set_cmd(project: str, assignments: tuple[str, ...]) -> None:
    """Change PROJECT's settings while it runs, e.g. `set PROJECT rate=5 burst=10 per_host_concurrency=4`.

    Settings: rate, burst, queue_limit, per_host_concurrency, per_host_delay, obey_robots,
    priority, retries, retry_delays, retry_policy (quick or recurring), age, auto_recrawl,
    user_agent, default_headers (JSON), download_timeout.
    Retry settings win over the spider's; they, and the request defaults (user agent, headers,
    timeout), apply to rows added after the change."""
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
        fail(exc)
    changed = ", ".join(f"{k}={current.get(k)}" for k in values)
    console.print(f"{project}: {changed}")


@click.command()
@click.argument("project")
@click.option("--every", "every", type=Duration(), required=True, help="Interval: 30m, 1h, 1d ...")
def schedule(project: str, every: float) -> None:
    """Re-seed PROJECT's start URLs on a schedule (beat sends them; URLs whose age has not
    passed are not fetched again)."""
    from crawlcluster.client import Crawl

    try:
        Crawl(project).schedule(every)
    except CrawlClusterError as exc:
        fail(exc)
    console.print(f"{project}: start URLs re-seeded every {every:g}s")


@click.command()
@click.argument("project")
@click.option("--after", type=Duration(), help="Keep the data this long first (default: a day).")
def delete(project: str, after: float | None) -> None:
    """Cancel PROJECT and remove its rows and results after a delay (`resume` or a new submit undoes it)."""
    from crawlcluster.client import Crawl

    try:
        when = Crawl(project).delete(after)
    except CrawlClusterError as exc:
        fail(exc)
    console.print(f"{project}: cancelled; its rows and results are removed at "
                  f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(when))} UTC")

