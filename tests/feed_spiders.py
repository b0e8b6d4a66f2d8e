"""Spiders for tests/test_feeds.py: items of every kind a callback may yield (a dict, a
dataclass, an attrs class, a pydantic model), and one whose item JSON cannot hold. They
read the test site's address from CLI_TEST_SITE (the command's environment)."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import os
from collections.abc import MutableMapping

import attrs
import pydantic

from crawlcluster import Request, Spider

PAGES = 3


@dataclasses.dataclass
class Book:
    url: str
    title: str
    price: float
    tags: tuple[str, ...] = ()


@attrs.define
class Author:
    url: str
    name: str
    born: int
    book: Book | None = None


class Review(pydantic.BaseModel):
    url: str
    stars: int
    when: datetime.date
    price: decimal.Decimal


class TypedItemsSpider(Spider):
    """PAGES pages in a chain; each yields a dataclass, an attrs object, a pydantic model and
    a dict, whose keys differ (a CSV header that grows)."""

    name = "typed"

    def start(self):
        yield Request(f"{os.environ['CLI_TEST_SITE']}/t/0")

    def parse(self, response):
        number = int(response.url.rsplit("/", 1)[1])
        book = Book(response.url, response.title, 9.5 + number, ("novel", str(number)))
        yield book
        yield Author(response.url, f"Author {number}", 1900 + number, book)
        yield Review(url=response.url, stars=number, when=datetime.date(2024, 1, number + 1),
                     price=decimal.Decimal("1.50"))
        yield {"url": response.url, "kind": "dict", "page": number}
        if number + 1 < PAGES:
            yield Request(response.urljoin(f"/t/{number + 1}"))


class DecimalSpider(Spider):
    """Yields an item whose price is a Decimal, which JSON cannot hold."""

    name = "decimal"

    def parse(self, response):
        yield {"url": response.url, "offer": {"price": decimal.Decimal("2.50")}}


class Fields(MutableMapping):
    """A mapping that is not a dict, as Scrapy's ``Item`` is (a MutableMapping of its fields)."""

    def __init__(self, **values):
        self._values = dict(values)

    def __getitem__(self, key):
        return self._values[key]

    def __setitem__(self, key, value):
        self._values[key] = value

    def __delitem__(self, key):
        del self._values[key]

    def __iter__(self):
        return iter(self._values)

    def __len__(self):
        return len(self._values)


class MappingSpider(Spider):
    """Returns (not yields) one mapping item, as a Scrapy spider may return an Item."""

    name = "mapping"

    def parse(self, response):
        return Fields(url=response.url, title=response.title, nested=Fields(depth=response.depth))
