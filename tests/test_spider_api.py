"""Unit tests of the spider API (Spider, Request, LinkSpider, spider paths) and of stage messages."""

from __future__ import annotations

import subprocess
import sys
import zlib
from typing import Any, Iterator

import pytest

from crawlcluster.errors import ConfigurationError
from crawlcluster.http import Response
from crawlcluster.messages import compress_body, decompress_body, fetch_messages
from crawlcluster.spider import LinkSpider, Request, Spider, load_spider_class, spider_path


class ExampleSpider(Spider):
    name = "example"
    start_urls = ["http://example.com/", "http://example.com/other"]

    def parse(self, response: Any) -> Iterator[Any]:
        yield {"url": response.url}

    def parse_detail(self, response: Any) -> Iterator[Any]:
        yield {}


class NoParseSpider(Spider):
    start_urls = ["http://example.com/"]


class NotASpider:
    pass


# --- Spider defaults -------------------------------------------------------------------

def test_start_yields_one_request_per_start_url_with_parse_callback() -> None:
    requests = list(ExampleSpider().start())
    assert [r.url for r in requests] == ExampleSpider.start_urls
    assert all(isinstance(r, Request) and r.callback_name() == "parse" for r in requests)


def test_start_urls_can_be_given_as_keyword_argument() -> None:
    requests = list(Spider(start_urls=["http://a.org/"]).start())
    assert [r.url for r in requests] == ["http://a.org/"]


def test_spider_without_start_urls_starts_nothing() -> None:
    assert list(Spider().start()) == []


def test_parse_not_implemented_raises_naming_the_class() -> None:
    with pytest.raises(NotImplementedError, match="NoParseSpider"):
        NoParseSpider().parse(None)


def test_callback_lookup_of_missing_method_is_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="'nope'"):
        ExampleSpider().callback("nope")


# --- Request ---------------------------------------------------------------------------

def test_callback_name_of_string() -> None:
    assert Request("http://e.com/", callback="parse_detail").callback_name() == "parse_detail"


def test_callback_name_of_bound_method() -> None:
    assert Request("http://e.com/", callback=ExampleSpider().parse_detail).callback_name() == "parse_detail"


def test_callback_name_of_none_is_the_default() -> None:
    assert Request("http://e.com/").callback_name() == "parse"
    assert Request("http://e.com/").callback_name(default="other") == "other"


def test_fetch_options_of_plain_get_is_none() -> None:
    assert Request("http://e.com/").fetch_options() is None
    assert Request("http://e.com/", method="get", headers={}, cookies={}).fetch_options() is None


def test_fetch_options_carry_method_headers_cookies_body_timeout() -> None:
    request = Request("http://e.com/", method="post", headers={"X-A": "1"}, cookies={"s": "2"},
                      body="q=1", timeout=5.0)
    assert request.fetch_options() == {"method": "POST", "headers": {"X-A": "1"}, "cookies": {"s": "2"},
                                       "body": "q=1", "timeout": 5.0}


@pytest.mark.parametrize("kwargs, expected", [
    ({"headers": {"Accept": "text/html"}}, {"headers": {"Accept": "text/html"}}),
    ({"timeout": 2.5}, {"timeout": 2.5}),
    ({"method": "HEAD"}, {"method": "HEAD"}),
])
def test_fetch_options_carry_only_non_default_options(kwargs: dict[str, Any],
                                                      expected: dict[str, Any]) -> None:
    assert Request("http://e.com/", **kwargs).fetch_options() == expected


# --- spider paths ----------------------------------------------------------------------

def test_spider_path_is_module_colon_qualname() -> None:
    assert spider_path(ExampleSpider) == f"{__name__}:ExampleSpider"


def test_load_spider_class_round_trips_spider_path() -> None:
    assert load_spider_class(spider_path(ExampleSpider)) is ExampleSpider


def test_load_spider_class_accepts_dotted_form() -> None:
    assert load_spider_class(f"{__name__}.ExampleSpider") is ExampleSpider


def test_load_spider_class_of_built_in_link_spider() -> None:
    assert load_spider_class("crawlcluster.spider:LinkSpider") is LinkSpider
    assert spider_path(LinkSpider) == "crawlcluster.spider:LinkSpider"


@pytest.mark.parametrize("path", [
    "crawlcluster_no_such_module:Spider",
    "crawlcluster_no_such_module.sub.Spider",
    f"{__name__}:NoSuchSpider",
    f"{__name__}.NoSuchSpider",
    f"{__name__}:NotASpider",
    "crawlcluster.spider:Request",
    "crawlcluster.spider:load_spider_class",
    "NoModuleAtAll",
    ":ExampleSpider",
    f"{__name__}:",
])
def test_load_spider_class_error_is_configuration_error_naming_path(path: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        load_spider_class(path)
    assert repr(path) in str(info.value)


def test_spider_path_of_class_in_main_raises_configuration_error() -> None:
    main_spider = type("MainSpider", (Spider,), {"__module__": "__main__"})
    with pytest.raises(ConfigurationError, match="__main__") as info:
        spider_path(main_spider)
    assert "MainSpider" in str(info.value)


# --- LinkSpider ------------------------------------------------------------------------

PAGE = b"""<!doctype html><html><head>
<title>Link page</title>
<meta name="description" content="A page of links">
<link rel="canonical" href="/canonical/page">
</head><body>
<a href="/a">a</a> <a href="b?y=2&amp;x=1">b</a> <a href="/a#again">a again</a>
<a href="mailto:x@example.com">mail</a> <a href="https://other.org/">other</a>
</body></html>"""


def link_page(body: bytes = PAGE) -> Response:
    return Response("http://example.com/dir/page", 200, {"content-type": "text/html; charset=utf-8"}, body)


def test_link_spider_yields_one_item_then_a_request_per_link() -> None:
    produced = list(LinkSpider().parse(link_page()))
    item, requests = produced[0], produced[1:]
    assert item == {
        "url": "http://example.com/dir/page",
        "status": 200,
        "title": "Link page",
        "description": "A page of links",
        "canonical": "http://example.com/canonical/page",
        "out_links": 3,
    }
    assert all(isinstance(r, Request) for r in requests)
    assert [r.url for r in requests] == [
        "http://example.com/a", "http://example.com/dir/b?x=1&y=2", "https://other.org/"]


def test_link_spider_item_without_description_or_canonical_has_none() -> None:
    [item] = list(LinkSpider().parse(link_page(b"<html><head><title>t</title></head><body></body></html>")))
    assert item["description"] is None
    assert item["canonical"] is None
    assert item["out_links"] == 0


def test_link_spider_on_non_html_yields_one_item_and_no_requests() -> None:
    response = Response("http://example.com/f.pdf", 200, {"content-type": "application/pdf"},
                        b"%PDF-1.7 data")
    produced = list(LinkSpider().parse(response))
    assert produced == [{"url": "http://example.com/f.pdf", "status": 200,
                         "content_type": "application/pdf", "bytes": 13}]


# --- messages --------------------------------------------------------------------------

def rows(n: int) -> list[dict[str, Any]]:
    return [{"task_id": f"id{i}", "url": f"http://e.com/{i}", "depth": 0, "callback": "parse",
             "fetch": None, "data": None} for i in range(n)]


def test_fetch_messages_split_rows_into_batches_of_given_size() -> None:
    messages = fetch_messages("proj", rows(5), 2)
    assert [len(m["tasks"]) for m in messages] == [2, 2, 1]
    assert all(m["project"] == "proj" for m in messages)
    assert [t["id"] for m in messages for t in m["tasks"]] == [f"id{i}" for i in range(5)]


def test_fetch_messages_of_no_rows_is_no_messages() -> None:
    assert fetch_messages("proj", [], 16) == []


def test_fetch_messages_with_batch_size_below_one_lose_no_rows() -> None:
    messages = fetch_messages("proj", rows(3), 0)
    assert [t["id"] for m in messages for t in m["tasks"]] == ["id0", "id1", "id2"]


def test_fetch_message_entries_leave_out_default_keys() -> None:
    [message] = fetch_messages("proj", rows(1), 16)
    assert message["tasks"] == [{"id": "id0", "url": "http://e.com/0"}]


def test_fetch_message_entries_carry_non_default_keys() -> None:
    row = {"task_id": "x", "url": "http://e.com/", "depth": 3, "callback": "parse_detail",
           "fetch": {"method": "POST", "body": "q"}, "data": {"k": [1]}}
    [message] = fetch_messages("proj", [row], 16)
    assert message["tasks"] == [{"id": "x", "url": "http://e.com/", "depth": 3, "cb": "parse_detail",
                                 "fetch": {"method": "POST", "body": "q"}, "data": {"k": [1]}}]


def test_falsy_but_present_data_is_kept() -> None:
    row = {"task_id": "x", "url": "http://e.com/", "data": 0}
    assert fetch_messages("p", [row], 1)[0]["tasks"][0]["data"] == 0


def test_compress_body_round_trips_through_decompress_body() -> None:
    body = b"<html>" + b"hello world " * 500 + b"</html>"
    compressed, flag = compress_body(body, level=6)
    assert flag is True
    assert len(compressed) < len(body)
    assert zlib.decompress(compressed) == body
    assert decompress_body({"body": compressed, "z": flag}) == body


def test_compress_body_leaves_tiny_bodies_uncompressed() -> None:
    body = b"<p>tiny</p>"
    assert compress_body(body, level=6) == (body, False)
    assert compress_body(body) == (body, False)
    assert decompress_body({"body": body, "z": False}) == body


def test_compress_level_zero_stores_raw() -> None:
    body = b"x" * 10_000
    assert compress_body(body, level=0) == (body, False)


def test_decompress_body_of_missing_body_is_empty_bytes() -> None:
    assert decompress_body({}) == b""


def _run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          check=False)


def test_importing_the_spider_api_imports_no_celery() -> None:
    for module in ("crawlcluster.spider", "crawlcluster.http", "crawlcluster"):
        result = _run_python(f"import {module}, sys; assert 'celery' not in sys.modules, sorted(sys.modules)")
        assert result.returncode == 0, f"import {module} imported celery: {result.stderr[-500:]}"


def test_request_and_response_are_the_public_api() -> None:
    import crawlcluster
    import crawlcluster.spider

    assert {"Request", "Response", "Spider"} <= set(crawlcluster.__all__)
    assert crawlcluster.Request is Request is crawlcluster.spider.Request
    assert crawlcluster.Response is Response


def test_celery_finds_the_app_however_the_package_was_first_imported() -> None:
    # a task module imports the submodule crawlcluster.app before anyone asks for the
    # package's attribute; celery -A crawlcluster must still find the Celery app
    code = (
        "import sys\n"
        "from crawlcluster.app import render_unavailable\n"
        "import tasks.fetch\n"
        "import crawlcluster\n"
        "from celery.app.utils import find_app\n"
        "from crawlcluster.app import CrawlCelery\n"
        "from crawlcluster import app\n"
        "assert isinstance(app, CrawlCelery), app\n"
        "assert find_app('crawlcluster') is app is crawlcluster.celery\n"
        "assert 'crawlcluster.fetch' in app.tasks\n"
        "print('ok')\n"
    )
    result = _run_python(code)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-800:]
