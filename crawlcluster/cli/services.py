"""The commands around the cluster's services: ``initdb`` (the schema), ``metrics`` (the
Prometheus exporter) and ``render-stats`` (the render workers' browsers)."""

from __future__ import annotations

import time

import click
from rich.table import Table

from crawlcluster.cli.group import console, fail
from crawlcluster.errors import CrawlClusterError


@click.command("render-stats")
def render_stats_cmd() -> None:
    """Per render worker process: pages, recycles, crashes, hung kills, refused requests, browser memory."""
    from crawlcluster.client import render_stats

    try:
        rows = render_stats()
    except CrawlClusterError as exc:
        fail(exc)
    table = Table("worker", "browser pid", "pages", "failed", "launched", "recycles", "crashes", "hung kills",
                  "refused requests", "PSS MiB", "summed RSS MiB")
    for row in rows:
        table.add_row(row["worker"], str(row["browser_pid"] or "-"), str(row["pages_rendered"]),
                      str(row["render_failures"]), str(row["browsers_launched"]), str(row["recycles"]),
                      str(row["crashes"]), str(row["hung_kills"]), str(row["refused_requests"]),
                      f"{(row['browser_pss_bytes'] or 0) / 2**20:.0f}",
                      f"{(row['browser_rss_bytes'] or 0) / 2**20:.0f}")
    console.print(table)



@click.command()
def initdb() -> None:
    """Create or upgrade the database schema (CRAWLCLUSTER_DATABASE_URL)."""
    from crawlcluster.db import open_database, table_names

    try:
        engine = open_database()
    except CrawlClusterError as exc:  # unreachable or missing: the message says what to do
        raise click.ClickException(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - say which database could not be initialised
        raise click.ClickException(f"cannot initialise the database: {exc}") from None
    console.print(f"schema up to date in {engine.url.render_as_string(hide_password=True)}: "
                  f"{', '.join(table_names(engine))}")


@click.command()
@click.option("--port", default=9808, show_default=True, type=click.IntRange(1, 65535))
@click.option("--address", default="127.0.0.1", show_default=True,
              help="0.0.0.0 to let Prometheus scrape from elsewhere.")
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


