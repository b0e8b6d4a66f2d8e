"""Spiders for tests/test_spider_habits.py, each told the test site's address by an argument
(``site``): Scrapy users' habits (class settings, custom_settings, -a, meta, json, xpath,
::text, self.logger) on real pages."""

from __future__ import annotations

from crawlcluster import Request, Spider


class _SiteSpider(Spider):
    site = ""
    paths: tuple[str, ...] = ("/secret",)

    def start(self):
        for path in self.paths:
            yield Request(self.site + path)

    def parse(self, response):
        yield {"url": response.url, "title": response.title}


class IgnoresRobotsByAttribute(_SiteSpider):
    """robots.txt disallows /secret; the class attribute says not to ask it."""

    name = "robots_attribute"
    obey_robots = False


class IgnoresRobotsByCustomSettings(_SiteSpider):
    """The same, in Scrapy's words."""

    name = "robots_custom"
    custom_settings = {"ROBOTSTXT_OBEY": False}


class SlowOnOneHost(_SiteSpider):
    """Four pages of one host, at least 0.4 s apart (a class attribute, Scrapy's download_delay)."""

    name = "slow"
    per_host_delay = 0.4
    obey_robots = False
    paths = tuple(f"/slow/{n}" for n in range(4))


class HabitsSpider(Spider):
    """A Scrapy user's callback: meta on the request, json(), xpath(), css ::text / ::attr,
    response.request, self.logger, and a user agent and headers from custom_settings."""

    name = "habits"
    site = ""
    custom_settings = {"ROBOTSTXT_OBEY": False, "USER_AGENT": "habits-bot/1.0",
                       "DEFAULT_REQUEST_HEADERS": {"Accept-Language": "fr"}}

    def start(self):
        yield Request(self.site + "/books", meta={"shelf": "top"}, headers={"X-Shelf": "top"})

    def parse(self, response):
        self.logger.info("listing has %d books", len(response.css("li.book")))
        yield {
            "kind": "listing",
            "shelf": response.meta["shelf"],
            "heading": response.css("h1::text").get(),
            "titles": response.css("li.book a::text").getall(),
            "hrefs": response.xpath("//li[@class='book']/a/@href").getall(),
            "first_book_html": response.css("li.book").get(),
            "request": [response.request.url, response.request.callback, response.request.data,
                        (response.request.headers or {}).get("X-Shelf")],
        }
        for href in response.css("li.book a::attr(href)").getall():
            yield response.follow(href, callback="parse_api", meta={"from": response.url})

    def parse_api(self, response):
        self.logger.info("book %s", response.json()["title"])
        yield {"kind": "book", **response.json(), "from": response.meta["from"],
               "callback": response.request.callback}


class ArgumentsSpider(Spider):
    """-a category=... reaches __init__; the start URL and the item say so."""

    name = "arguments"

    def __init__(self, category: str = "none", **kwargs):
        super().__init__(**kwargs)
        self.category = category

    def start(self):
        yield Request(f"{self.site}/cat/{self.category}")

    def parse(self, response):
        yield {"category": self.category, "url": response.url}
