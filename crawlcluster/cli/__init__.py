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
    crawlcluster web [--host 127.0.0.1] [--port 5050]   the crawl console
    crawlcluster parse URL --spider pkg.mod:Spider [--callback NAME]   try a callback on one URL
    crawlcluster shell URL [--spider pkg.mod:Spider]   a Python prompt with the page's response
    crawlcluster startproject NAME [DIR]       a runnable project of spiders
    crawlcluster genspider NAME DOMAIN         a new spider in the project here

The group and what the commands share are in ``group``; the commands, by family, in
``local_crawl`` (crawl, demo), ``projects`` (submit, status, pause, resume, cancel, set,
schedule, delete), ``outcomes`` (results, screenshots, failures, retry) and ``services``
(initdb, metrics, render-stats), ``web`` (the crawl console), ``trial`` (parse, shell: one
URL, nothing stored), ``scaffold`` (startproject, genspider). ``main`` is the console script
and ``python -m crawlcluster.cli``.
"""

from __future__ import annotations

from crawlcluster.cli.group import main
from crawlcluster.cli.local_crawl import crawl, demo
from crawlcluster.cli.outcomes import failures, results, retry, screenshots
from crawlcluster.cli.projects import cancel, delete, pause, resume, schedule, set_cmd, status, submit_cmd
from crawlcluster.cli.scaffold import genspider, startproject
from crawlcluster.cli.services import initdb, metrics, render_stats_cmd
from crawlcluster.cli.trial import parse, shell
from crawlcluster.cli.web import web

__all__ = ["main"]

for _command in (crawl, demo, submit_cmd, status, results, screenshots, render_stats_cmd, pause, resume,
                 cancel, failures, retry, initdb, metrics, set_cmd, schedule, delete, web, parse, shell,
                 startproject, genspider):
    main.add_command(_command)
