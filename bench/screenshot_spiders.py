"""The spider ``python -m bench screenshots`` crawls the bundled demo site with: its pages
and their links as items and follow-ups, and a callback that raises, for the step
debugger's traceback."""

from __future__ import annotations

import logging
import os
from typing import Any, Iterator

from crawlcluster import Request, Response, Spider

logger = logging.getLogger(__name__)

# the demo site's address: the embedded crawl runs the spider in its own process, which inherits it
START_ENV = "BENCH_SCREENSHOT_START"


class DemoSpider(Spider):
    """Each demo page as an item (title, links), its links followed; every seventh page's
    ``parse_prices`` raises (the site has no prices), as a spider's bug does."""

    name = "demo-spider"

    def start(self) -> Iterator[Request]:
        yield Request(os.environ[START_ENV])

    def parse(self, response: Response) -> Iterator[Any]:
        links = response.links()
        yield {"url": response.url, "title": response.title, "links": len(links)}
        for number, link in enumerate(links[:6]):
            yield response.follow(link, callback="parse_prices" if number == 0 else "parse",
                                  data={"from": response.url})

    def parse_prices(self, response: Response) -> Iterator[Any]:
        logger.info("looking for prices on %s (from %s)", response.url, (response.data or {}).get("from"))
        price = response.css_first("span.price")
        if price is None:
            raise ValueError(f"no span.price on {response.url}: the page's layout changed?")
        yield {"url": response.url, "price": float(price.text())}
