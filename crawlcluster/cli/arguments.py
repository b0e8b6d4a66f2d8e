"""What ``crawl`` and ``submit`` share with ``parse``: ``-a NAME=VALUE`` (spider arguments, as
Scrapy's), ``-s NAME=VALUE`` (settings: our names, ``CRAWLCLUSTER_`` names or Scrapy's) and the
spider a target names (``pkg.mod:Spider`` from the current directory, or a ``.py`` file)."""

from __future__ import annotations

from typing import Any

import click

from crawlcluster.cli.trial import _spider_kwargs
from crawlcluster.errors import ConfigurationError
from crawlcluster.spider_settings import Assignments, parse_assignments


def spider_arguments(command: Any) -> Any:
    """The -a and -s options."""
    command = click.option(
        "-s", "setting_args", multiple=True, metavar="NAME=VALUE",
        help="A setting for this crawl, repeatable: a project setting (per_host_delay=1), its CRAWLCLUSTER_ "
             "name or Scrapy's (DOWNLOAD_DELAY=1, ROBOTSTXT_OBEY=False, DEPTH_LIMIT=2, ...).")(command)
    command = click.option(
        "-a", "spider_args", multiple=True, metavar="NAME=VALUE",
        help="A spider argument (passed to the spider's __init__, an attribute of the spider by default); "
             "repeatable.")(command)
    return command


def spider_kwargs(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``-a`` pairs as keyword arguments (values are strings, as in Scrapy)."""
    return _spider_kwargs(pairs)


def settings_of(pairs: tuple[str, ...], *, this_machine: bool) -> Assignments:
    """``-s`` pairs. A ``CRAWLCLUSTER_`` name of a cluster-wide setting applies to this process
    when the crawl runs here (``crawl``); ``submit`` refuses it, since the workers read theirs
    from their own environment."""
    from crawlcluster import settings

    try:
        assigned = parse_assignments(pairs)
    except ConfigurationError as exc:
        raise click.UsageError(str(exc)) from None
    if assigned.cluster:
        names = ", ".join("CRAWLCLUSTER_" + name.upper() for name in assigned.cluster)
        if not this_machine:
            raise click.UsageError(f"-s {names}: a cluster-wide setting, read by the workers from their own "
                                   "environment; set it there (submit takes project settings only)")
        try:
            settings.configure(**assigned.cluster)
            settings.current()  # parsed and checked now, naming the variable
        except ConfigurationError as exc:
            raise click.UsageError(str(exc)) from None
    return assigned


def spider_target(targets: tuple[str, ...], *, files: bool) -> Any:
    """URLs (a list), a spider's import path (the current directory importable), or with
    ``files`` the import path of the one spider in a ``.py`` file."""
    from crawlcluster.runspider import import_current_directory, is_spider_file, spider_in_file

    if len(targets) == 1 and is_spider_file(targets[0]):
        if not files:
            raise click.UsageError(f"{targets[0]}: a spider file runs on this machine only "
                                   "(crawlcluster crawl FILE); the cluster's workers import spiders from "
                                   "installed packages: submit pkg.module:SpiderClass")
        try:
            return spider_in_file(targets[0])
        except ConfigurationError as exc:
            raise click.UsageError(str(exc)) from None
    if len(targets) == 1 and "://" not in targets[0] and ":" in targets[0]:
        import_current_directory()
        return targets[0]
    return list(targets)
