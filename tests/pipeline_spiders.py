"""Spiders and item pipelines of tests/test_pipelines.py; workers load them by import path
(tests.pipeline_spiders:...), the pipelines too, from the ``tests`` package the tests allow.

``JsonWriterPipeline`` follows the pattern of Scrapy's documentation (open a JSON-lines file
in ``open_spider``, write ``dict(item)`` in ``process_item``, close it in ``close_spider``),
written here from that description: it uses nothing of crawlcluster.
"""

from __future__ import annotations

import asyncio
import json
import os

from crawlcluster import DropItem, Request, Spider


class JsonWriterPipeline:
    """Scrapy's documented JSON-lines writer pattern, unchanged: a file in the current directory."""

    def open_spider(self, spider):
        self.file = open("items.jsonl", "w")

    def close_spider(self, spider):
        self.file.close()

    def process_item(self, item, spider):
        self.file.write(json.dumps(dict(item)) + "\n")
        return item


class PricePipeline:
    """Drops the items without a price and enriches the others (a price with tax, its pid)."""

    def __init__(self, tax: float) -> None:
        self.tax = tax

    @classmethod
    def from_crawler(cls, crawler):
        return cls(tax=crawler.settings.getfloat("PRICE_TAX", 1.0))

    def process_item(self, item, spider):
        if item.get("price") is None:
            raise DropItem("no price")
        item["price_with_tax"] = round(item["price"] * self.tax, 2)
        item["enriched_by"] = os.getpid()
        return item


class AsyncTagPipeline:
    """An ``async def process_item`` (awaited by the parse stage) that tags every item."""

    async def process_item(self, item, spider):
        await asyncio.sleep(0)
        item["tag"] = spider.tag
        return item


class ExplodingPipeline:
    """Raises on one product's item: its page's row fails, kind ``pipeline``."""

    def process_item(self, item, spider):
        if item["name"] == "Product 5":
            raise ValueError("cannot handle product 5")
        return item


class ShopSpider(Spider):
    """Follows the shop's links on 127.0.0.1 and yields one item per product page."""

    name = "shop"
    base_url = ""
    tag = "shop"
    allowed_domains = ["127.0.0.1"]
    pipelines = [PricePipeline, "tests.pipeline_spiders:AsyncTagPipeline"]
    custom_settings = {"PRICE_TAX": 1.2,
                       "ITEM_PIPELINES": {"tests.pipeline_spiders.JsonWriterPipeline": 800}}

    def start(self):
        yield Request(self.base_url + "/")

    def parse(self, response):
        if "/p/" in response.url:
            price = response.css_first("span.price")
            yield {"url": response.url, "name": response.title,
                   "price": float(price.text()) if price is not None else None}
        yield from response.follow_all()


class ExplodingShopSpider(ShopSpider):
    name = "exploding-shop"
    pipelines = ["tests.pipeline_spiders:ExplodingPipeline"]
    custom_settings: dict = {}


class ForbiddenPipelineSpider(ShopSpider):
    """Names a pipeline outside the allowed packages: the project stops with a sentence."""

    name = "forbidden-pipeline"
    pipelines = ["json.decoder:JSONDecoder"]
    custom_settings: dict = {}
