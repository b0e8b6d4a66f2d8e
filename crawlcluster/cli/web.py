"""``crawlcluster web``: the crawl console, served with uvicorn on the cluster's database and
broker (the pages are :mod:`crawlcluster.web`)."""

from __future__ import annotations

import click

from crawlcluster.cli.group import console, fail
from crawlcluster.errors import ConfigurationError, CrawlClusterError


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; any but loopback needs CRAWLCLUSTER_WEB_AUTH.")
@click.option("--port", default=5050, show_default=True, type=click.IntRange(1, 65535),
              envvar="CRAWLCLUSTER_WEB_PORT", show_envvar=True)
@click.option("--require-auth", is_flag=True,
              help="Refuse to start without CRAWLCLUSTER_WEB_AUTH, whatever the address "
                   "(the deploy recipes).")
def web(host: str, port: int, require_auth: bool) -> None:
    """Serve the crawl console: every project's progress, hosts, failures, URLs and results,
    with pause, resume, cancel, run again, rate and retry as buttons (CRAWLCLUSTER_DATABASE_URL,
    CRAWLCLUSTER_BROKER_URL)."""
    import uvicorn

    from crawlcluster import settings
    from crawlcluster.db import open_database
    from crawlcluster.web.app import from_settings
    from crawlcluster.web.security import check_bind, parse_auth

    try:
        own = settings.current()
        if require_auth and not own.web_auth:
            fail(ConfigurationError("crawlcluster web --require-auth: set "
                                    "CRAWLCLUSTER_WEB_AUTH=user:password (several: comma-separated); "
                                    "this console is served to others"))
        check_bind(host, parse_auth(own.web_auth))
        open_database(own.database_url)  # unreachable or missing: one sentence, before serving
        app = from_settings(own)
    except CrawlClusterError as exc:
        fail(exc)
    who = "basic auth on" if own.web_auth else "no auth: this machine only"
    console.print(f"crawl console on http://{host}:{port}/ ({who}; Ctrl-C to stop)")
    # no websockets: the console polls (and pyppeteer pins an old websockets uvicorn cannot use)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, ws="none")
