"""Unit tests of the parse engine: Response helpers, encodings, run_callback and filter_requests."""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from crawlcluster.errors import InvalidURL, NotHTML
from crawlcluster.http import Response
from crawlcluster.spider import Request, Spider
from workers.callbacks import filter_requests, run_callback

PAGE_URL = "http://example.com/dir/page.html"
HTML_HEADERS = {"content-type": "text/html; charset=utf-8"}

DOC = b"""<!doctype html>
<html><head><title>  Small page </title></head>
<body>
  <h1 class="head">Heading</h1>
  <ul><li class="item">one</li><li class="item">two</li><li class="item">three</li></ul>
  <a href="a.html">A</a> <a href="#top">fragment only</a> <a href="mailto:me@example.com">mail</a>
  <a href="javascript:void(0)">js</a> <a href=" JavaScript:alert(1)">js upper</a>
  <a href="tel:+123456">phone</a>
  <a>no href</a> <a href="">empty href</a> <a href="/root?b=2&amp;a=1#frag">root</a>
  <a href="a.html#again">A again</a> <a href="HTTP://Other.ORG:80/x">other</a> <a href="ftp://files.example.com/f">ftp</a>
</body></html>"""


def html(body: bytes, url: str = PAGE_URL, headers: dict[str, str] | None = None) -> Response:
    return Response(url, 200, HTML_HEADERS if headers is None else headers, body)


# --- HTML helpers ----------------------------------------------------------------------

def test_css_returns_all_matching_nodes() -> None:
    assert [n.text() for n in html(DOC).css("li.item")] == ["one", "two", "three"]


def test_css_first_returns_first_match_or_default() -> None:
    page = html(DOC)
    assert page.css_first("h1.head").text() == "Heading"
    assert page.css_first("table") is None
    assert page.css_first("table", default="none") == "none"


def test_title_is_stripped_text_of_title_element() -> None:
    assert html(DOC).title == "Small page"


def test_title_is_none_without_title_element() -> None:
    assert html(b"<html><body><p>x</p></body></html>").title is None


def test_links_are_absolute_normalised_unique_and_in_page_order() -> None:
    assert html(DOC).links() == [
        "http://example.com/dir/a.html",
        "http://example.com/root?a=1&b=2",
        "http://other.org/x",
    ]


def test_links_skip_fragments_non_web_schemes_and_missing_or_empty_href() -> None:
    links = html(DOC).links()
    assert not any(link.startswith(("mailto:", "javascript:", "tel:", "ftp:")) for link in links)
    assert PAGE_URL not in links  # neither "#top" nor href="" resolves to the page itself
    assert all("#" not in link for link in links)


BASE_DOC = b"""<html><head><base href="http://cdn.example.org/base/"><title>b</title></head>
<body><a href="x.html">x</a><a href="/y">y</a></body></html>"""


def test_links_honour_base_href() -> None:
    assert html(BASE_DOC).links() == ["http://cdn.example.org/base/x.html", "http://cdn.example.org/y"]


def test_urljoin_honours_base_href() -> None:
    assert html(BASE_DOC).urljoin("z.html") == "http://cdn.example.org/base/z.html"


def test_relative_base_href_is_resolved_against_page_url() -> None:
    page = html(b'<html><head><base href="/other/"></head><body><a href="q">q</a></body></html>')
    assert page.urljoin("q") == "http://example.com/other/q"
    assert page.links() == ["http://example.com/other/q"]


def test_urljoin_without_base_uses_page_url() -> None:
    assert html(DOC).urljoin("../up.html") == "http://example.com/up.html"


def test_follow_string_returns_absolute_request_with_callback_and_kwargs() -> None:
    request = html(DOC).follow("next.html?p=2", callback="parse_item", priority=5, data={"k": 1})
    assert isinstance(request, Request)
    assert request.url == "http://example.com/dir/next.html?p=2"
    assert request.callback == "parse_item"
    assert request.priority == 5
    assert request.data == {"k": 1}


def test_follow_anchor_node_uses_its_href() -> None:
    page = html(DOC)
    anchor = page.css_first('a[href="a.html"]')
    request = page.follow(anchor, callback="parse_a", method="POST")
    assert request.url == "http://example.com/dir/a.html"
    assert request.callback == "parse_a"
    assert request.method == "POST"


def test_follow_anchor_without_href_raises_invalid_url() -> None:
    page = html(DOC)
    anchor = [a for a in page.css("a") if "href" not in a.attributes][0]
    with pytest.raises(InvalidURL, match="no href"):
        page.follow(anchor)


def test_follow_all_skips_anchors_without_href() -> None:
    page = html(b'<p><a class="k" href="one">1</a><a class="k">2</a><a class="k" href="">3</a>'
                b'<a class="k" href="/two">4</a><a href="/not-k">5</a></p>')
    requests = page.follow_all("a.k", callback="cb", priority=2)
    assert [r.url for r in requests] == ["http://example.com/dir/one", "http://example.com/two"]
    assert all(r.callback == "cb" and r.priority == 2 for r in requests)


# --- encodings -------------------------------------------------------------------------

def test_charset_from_content_type_header() -> None:
    body = "<html><head><title>Café</title></head></html>".encode("iso-8859-1")
    page = html(body, headers={"content-type": "text/html; charset=ISO-8859-1"})
    assert page.title == "Café"


def test_charset_from_meta_charset_only() -> None:
    body = '<html><head><meta charset="iso-8859-1"><title>Café</title></head><body>Café</body></html>'
    page = html(body.encode("iso-8859-1"), headers={"content-type": "text/html"})
    assert page.title == "Café"


def test_charset_from_meta_http_equiv() -> None:
    body = ('<html><head><meta http-equiv="Content-Type" content="text/html; charset=windows-1251">'
            "<title>Привет, мир</title></head></html>")
    page = html(body.encode("windows-1251"), headers={"content-type": "text/html"})
    assert page.title == "Привет, мир"
    assert page.encoding in ("cp1251", "windows-1251")


def test_charset_from_utf8_bom() -> None:
    body = "\ufeff<html><head><title>Grüße</title></head></html>".encode("utf-8")
    page = html(body, headers={"content-type": "text/html"})
    assert page.title == "Grüße"
    assert not page.text.startswith("\ufeff")


def test_undeclared_utf8_is_decoded() -> None:
    body = "<html><head><title>Grüße aus Köln</title></head><body>naïve café</body></html>".encode("utf-8")
    page = html(body, headers={"content-type": "text/html"})
    assert page.title == "Grüße aus Köln"
    assert "naïve café" in page.text


def test_broken_html_still_yields_title_and_links() -> None:
    broken = (b"<html><head><title>Broken</title><body><div><a href='/one'>one<a href=/two>two"
              b"<p><b>bold<table><tr><td>")
    page = html(broken)
    assert page.title == "Broken"
    assert page.links() == ["http://example.com/one", "http://example.com/two"]


# --- non-HTML --------------------------------------------------------------------------

PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n"


def pdf() -> Response:
    return Response("http://example.com/doc.pdf", 200, {"content-type": "application/pdf"}, PDF)


def test_pdf_is_not_html() -> None:
    assert pdf().is_html is False
    assert pdf().content_type == "application/pdf"


def test_css_on_non_html_raises_not_html_naming_url() -> None:
    with pytest.raises(NotHTML, match="http://example.com/doc.pdf") as info:
        pdf().css("a")
    assert info.value.url == "http://example.com/doc.pdf"
    assert "application/pdf" in str(info.value)
    with pytest.raises(NotHTML):
        pdf().links()


def test_body_of_non_html_is_raw_bytes() -> None:
    assert pdf().body == PDF


@pytest.mark.parametrize("body", [b"<!doctype html><title>t</title>", b"  \n<!DOCTYPE HTML><title>t</title>",
                                  b"<html><title>t</title></html>"])
def test_no_content_type_but_html_start_is_html(body: bytes) -> None:
    page = Response(PAGE_URL, 200, {}, body)
    assert page.is_html is True
    assert page.title == "t"


def test_no_content_type_and_non_html_start_is_not_html() -> None:
    assert Response(PAGE_URL, 200, {}, b"just some text").is_html is False


def test_xhtml_content_type_is_html() -> None:
    assert html(b"<html></html>", headers={"content-type": "application/xhtml+xml; charset=utf-8"}).is_html


# --- run_callback ----------------------------------------------------------------------

class CallbackSpider(Spider):
    def parse(self, response: Any) -> Iterator[Any]:
        yield {"n": 1}
        yield Request("http://example.com/explicit", callback="detail")
        yield "next?page=2"
        yield None
        yield {"n": 2}

    def boom(self, response: Any) -> Iterator[Any]:
        yield {"partial": True}
        raise ValueError("kaput")

    def yields_int(self, response: Any) -> Iterator[Any]:
        yield 42


def test_run_callback_sorts_items_and_requests() -> None:
    outcome = run_callback(CallbackSpider(), "parse", html(DOC))
    assert outcome.error is None
    assert outcome.items == [{"n": 1}, {"n": 2}]
    assert outcome.requests[0].url == "http://example.com/explicit"
    assert outcome.requests[0].callback == "detail"
    assert len(outcome.requests) == 2


def test_run_callback_turns_yielded_string_into_request_joined_to_page() -> None:
    outcome = run_callback(CallbackSpider(), "parse", html(DOC))
    assert isinstance(outcome.requests[1], Request)
    assert outcome.requests[1].callback_name() == "parse"
    assert outcome.requests[1].url == "http://example.com/dir/next?page=2"


def test_run_callback_exception_becomes_error_naming_spider_callback_and_exception() -> None:
    outcome = run_callback(CallbackSpider(), "boom", html(DOC))
    assert outcome.error is not None
    assert "CallbackSpider.boom" in outcome.error
    assert "ValueError: kaput" in outcome.error
    assert outcome.items == [] and outcome.requests == []


def test_run_callback_yielded_int_is_an_error() -> None:
    outcome = run_callback(CallbackSpider(), "yields_int", html(DOC))
    assert outcome.error is not None
    assert "CallbackSpider.yields_int" in outcome.error
    assert "int" in outcome.error


def test_run_callback_unknown_callback_is_an_error() -> None:
    outcome = run_callback(CallbackSpider(), "no_such_method", html(DOC))
    assert outcome.error is not None and "no_such_method" in outcome.error


# --- filter_requests -------------------------------------------------------------------

class SiteSpider(Spider):
    allowed_domains = ["example.com", "127.0.0.1:8000"]


def kept_urls(spider: Spider, urls: list[str], depth: int = 0,
              max_depth: int | None = None) -> tuple[list[str], int]:
    kept, dropped = filter_requests(spider, [Request(u) for u in urls], depth, max_depth)
    return [url for url, _ in kept], dropped


def test_filter_keeps_allowed_domain_and_subdomains_and_normalises() -> None:
    urls = ["HTTP://Example.com:80/a#f", "http://www.example.com/b", "https://deep.sub.example.com/c"]
    assert kept_urls(SiteSpider(), urls) == (
        ["http://example.com/a", "http://www.example.com/b", "https://deep.sub.example.com/c"], 0)


def test_filter_drops_off_site_urls() -> None:
    urls = ["http://notexample.com/", "http://example.com.evil.org/", "http://evil.org/?u=example.com"]
    assert kept_urls(SiteSpider(), urls) == ([], 3)


def test_filter_allowed_domain_with_port_matches_that_port_only() -> None:
    urls = ["http://127.0.0.1:8000/x", "http://127.0.0.1:9000/x", "http://127.0.0.1/x"]
    assert kept_urls(SiteSpider(), urls) == (["http://127.0.0.1:8000/x"], 2)


def test_filter_drops_invalid_urls() -> None:
    urls = ["mailto:a@example.com", "http://", "http://example.com:99999/", "http://example.com/ok"]
    assert kept_urls(SiteSpider(), urls) == (["http://example.com/ok"], 3)


def test_filter_without_allowed_domains_keeps_every_valid_url() -> None:
    assert kept_urls(Spider(), ["http://a.org/", "https://b.net/x"]) == (["http://a.org/", "https://b.net/x"],
                                                                         0)


def test_filter_drops_everything_beyond_max_depth() -> None:
    urls = ["http://example.com/a", "http://example.com/b"]
    assert kept_urls(SiteSpider(), urls, depth=2, max_depth=2) == ([], 2)
    assert kept_urls(SiteSpider(), urls, depth=1, max_depth=2) == (urls, 0)
    assert kept_urls(SiteSpider(), urls, depth=50, max_depth=None) == (urls, 0)


def test_filter_returns_the_original_request_with_its_url() -> None:
    request = Request("http://example.com/a?b=1&a=2", callback="detail", priority=7)
    [(url, kept)] = filter_requests(SiteSpider(), [request], 0, None)[0]
    assert url == "http://example.com/a?a=2&b=1"
    assert kept is request


def test_links_joined_by_hand_for_plain_absolute_paths_are_what_urljoin_gives():
    # absolute paths take a short way (the page's origin + the path); every other href, and
    # every path urljoin would change (dot segments, "//host", whitespace, an empty query or
    # fragment at the end), goes through urljoin: both must give the same URLs
    hrefs = ["/a/b.html", "/a/b.html?x=2&a=1#f", "/.hidden", "/a/./b", "/a/../b", "/..//x", "//other.test/p",
             "/a b", "/a?", "/a#", "/a?b#", "/a\\b", "/%2e%2e/x", "/é/ü?q=é", "/p;params", "rel/x",
             "../up", "?only=query", "/a//b", "/x/.", "/x/..", "/#frag"]
    from crawlcluster.urls import normalize_url

    for base in ("http://h.test/dir/page.html", "https://u:p@H.test:8443/d/", "http://[::1]:8080/z"):
        body = "".join(f'<a href="{href}">x</a>' for href in hrefs).encode()
        response = Response(base, 200, {"content-type": "text/html"}, body)
        expected: list[str] = []
        for href in hrefs:
            url = normalize_url(href, base)
            if url not in expected:
                expected.append(url)
        assert response.links() == expected
