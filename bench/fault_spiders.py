"""The spider of `python -m bench faults`: the link spider, with one page that kills its worker.

Workers load it by import path (``bench.fault_spiders:FaultSpider``; bench/ is on their
PYTHONPATH). Every run of the fault matrix crawls with it, so the poison-page row differs
from the others only by ``exit_on``.
"""

from __future__ import annotations

import os
from typing import Any, Iterator
from urllib.parse import urlsplit

from crawlcluster import Request
from crawlcluster.spider import LinkSpider


class FaultSpider(LinkSpider):
    """LinkSpider from ``start_url``; on the page whose path is ``exit_on`` the callback
    ends its process with ``os._exit(1)``, as a segfaulting C extension or the OOM killer would."""

    name = "faults"
    start_url = ""
    exit_on = ""

    def start(self) -> Iterator[Request]:
        yield Request(self.start_url)

    def parse(self, response: Any) -> Iterator[Any]:
        if self.exit_on and urlsplit(response.url).path == self.exit_on:
            os._exit(1)
        yield from super().parse(response)
