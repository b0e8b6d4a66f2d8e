"""``crawlcluster startproject`` and ``crawlcluster genspider``: a runnable project of spiders
and a new spider in it (:mod:`crawlcluster.scaffold`), as Scrapy's commands of those names."""

from __future__ import annotations

from pathlib import Path

import click

from crawlcluster.cli.group import console, fail
from crawlcluster.scaffold import ScaffoldError, gen_spider, start_project


@click.command()
@click.argument("name")
@click.argument("directory", required=False, type=click.Path(file_okay=False))
@click.option("--domain", default="example.com", show_default=True,
              help="The site the example spider starts on.")
def startproject(name: str, directory: str | None, domain: str) -> None:
    """Write a runnable project NAME (spider, pipeline, settings, a test on a saved page,
    Dockerfile, docker-compose.yml) into DIRECTORY (default: ./NAME)."""
    try:
        written = start_project(name, directory, domain=domain)
    except ScaffoldError as exc:
        fail(exc)
    root = Path(directory) if directory is not None else Path(name)
    console.print(f"wrote project {name} in {root}/ ({len(written)} files); next:", highlight=False)
    console.print(f"  cd {root} && pip install -e '.[test]' && pytest\n"
                  f"  CRAWLCLUSTER_SPIDER_PACKAGES={name} crawlcluster crawl "
                  f"{name}.spiders.example:ExampleSpider -o items.jsonl", markup=False, highlight=False)


@click.command()
@click.argument("name")
@click.argument("domain")
def genspider(name: str, domain: str) -> None:
    """Add a spider module NAME for DOMAIN to the project in the current directory
    (refused outside a project and when the module exists)."""
    try:
        path = gen_spider(name, domain)
    except ScaffoldError as exc:
        fail(exc)
    console.print(f"wrote spider {name} in {path}", markup=False, highlight=False)
