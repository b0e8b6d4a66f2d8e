"""Spiders for tests/test_trial.py and tests/test_console_debugger.py: a catalogue whose pages
link to products, a product callback that logs and yields an item, and one that raises."""

from __future__ import annotations

import logging

from crawlcluster import Spider

logger = logging.getLogger(__name__)


class CatalogueSpider(Spider):
    """``/cat`` lists products (``a.product``); each product page yields its name and price."""

    name = "catalogue"

    def parse(self, response):
        for link in response.css("a.product"):
            yield response.follow(link, callback="parse_product", data={"from": response.url})
        yield {"url": response.url, "title": response.title}

    def parse_product(self, response):
        logger.info("product page %s from %s", response.url, (response.data or {}).get("from"))
        price = response.css_first("span.price")
        yield {"name": response.title, "price": float(price.text()) if price is not None else None}

    def parse_broken(self, response):
        raise ValueError(f"no basket on {response.url}")
        yield  # a generator, as a real callback is


def catalogue_site():
    """A ScriptedSite for CatalogueSpider: ``/cat`` links to ``/p/1`` and ``/p/2`` (products,
    priced 1.5 and 2.5) and, off the product list, ``/about``; ``/old`` redirects to ``/cat``."""
    from tests.scripted_site import ScriptedSite

    site = ScriptedSite()
    html = {"Content-Type": "text/html; charset=utf-8"}

    def product(number: int):
        body = (f"<html><head><title>Product {number}</title></head><body>"
                f"<span class=price>{number}.5</span></body></html>").encode()
        return lambda _n, _h: (200, html, body)

    catalogue = (b'<html><head><title>Catalogue</title></head><body>'
                 b'<a class="product" href="/p/1">one</a> <a class="product" href="/p/2">two</a> '
                 b'<a href="/about">about</a></body></html>')
    site.route("/cat", lambda _n, _h: (200, html, catalogue))
    site.route("/p/1", product(1))
    site.route("/p/2", product(2))
    site.route("/about", lambda _n, _h: (200, html, b"<html><head><title>About</title></head></html>"))
    site.route("/old", lambda _n, _h: (301, {"Location": "/cat"}, b""))
    return site
