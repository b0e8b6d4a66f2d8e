"""Unit tests of URL normalisation, url_host and task_id (pure: no network, database or Redis)."""

from __future__ import annotations

import re

import pytest

from crawlcluster.errors import InvalidURL
from crawlcluster.urls import normalize_url, task_id, url_host

BASE = "http://example.com/dir/sub/page.html"


# --- normalisation ---------------------------------------------------------------------

def test_fragment_is_dropped() -> None:
    assert normalize_url("http://example.com/page#section-2") == "http://example.com/page"


def test_query_parameters_are_sorted() -> None:
    assert normalize_url("http://example.com/s?b=2&a=1&c=3") == "http://example.com/s?a=1&b=2&c=3"


def test_scheme_and_host_are_lower_cased_but_path_is_not() -> None:
    assert normalize_url("HTTP://Example.COM/Path/To/File.HTML") == "http://example.com/Path/To/File.HTML"


def test_empty_path_becomes_slash() -> None:
    assert normalize_url("http://example.com") == "http://example.com/"


def test_surrounding_whitespace_is_ignored() -> None:
    assert normalize_url("  http://example.com/a \n") == "http://example.com/a"


@pytest.mark.parametrize("url, expected", [
    ("http://example.com:80/a", "http://example.com/a"),
    ("https://example.com:443/a", "https://example.com/a"),
    ("HTTP://Example.com:80/", "http://example.com/"),
])
def test_default_port_is_removed(url: str, expected: str) -> None:
    assert normalize_url(url) == expected


@pytest.mark.parametrize("url", [
    "http://example.com:8080/a",
    "https://example.com:8443/a",
    "http://example.com:443/a",   # 443 is not http's default
    "https://example.com:80/a",   # 80 is not https's default
])
def test_non_default_port_is_kept(url: str) -> None:
    assert normalize_url(url) == url


@pytest.mark.parametrize("spelling", [
    "http://example.com/~user",
    "http://example.com/%7euser",
    "http://example.com/%7Euser",
])
def test_percent_encoding_of_unreserved_characters_is_uniform(spelling: str) -> None:
    assert normalize_url(spelling) == "http://example.com/~user"


def test_space_in_path_is_percent_encoded() -> None:
    assert normalize_url("http://example.com/a b") == "http://example.com/a%20b"


def test_escaped_slash_is_upper_cased_not_decoded() -> None:
    assert normalize_url("http://example.com/a%2fb") == normalize_url("http://example.com/a%2Fb") == "http://example.com/a%2Fb"


@pytest.mark.parametrize("relative, expected", [
    ("../a", "http://example.com/dir/a"),
    ("./b", "http://example.com/dir/sub/b"),
    ("c?x=1", "http://example.com/dir/sub/c?x=1"),
    ("//other.org/p", "http://other.org/p"),
    ("/root?b=2&a=1#f", "http://example.com/root?a=1&b=2"),
])
def test_relative_url_is_resolved_against_base(relative: str, expected: str) -> None:
    assert normalize_url(relative, BASE) == expected


def test_absolute_url_ignores_base() -> None:
    assert normalize_url("https://other.org/x", BASE) == "https://other.org/x"


@pytest.mark.parametrize("url, expected", [
    ("http://[::1]:80/p", "http://[::1]/p"),
    ("https://[2001:db8::1]:443/", "https://[2001:db8::1]/"),
    ("http://[::1]:8080/p", "http://[::1]:8080/p"),
])
def test_ipv6_literal_keeps_brackets_and_drops_only_default_port(url: str, expected: str) -> None:
    assert normalize_url(url) == expected


@pytest.mark.parametrize("url, expected", [
    ("http://user:pw@example.com/p", "http://user:pw@example.com/p"),
    ("http://user:pw@Example.com:80/p", "http://user:pw@example.com/p"),
    ("http://user@example.com:8080/p", "http://user@example.com:8080/p"),
])
def test_userinfo_is_kept(url: str, expected: str) -> None:
    assert normalize_url(url) == expected


def test_normalisation_is_idempotent() -> None:
    once = normalize_url("HTTP://Example.com:80/a b/%7e?z=1&a=2#frag")
    assert normalize_url(once) == once


# --- rejection -------------------------------------------------------------------------

@pytest.mark.parametrize("url", [
    "mailto:someone@example.com",
    "javascript:void(0)",
    "ftp://example.com/file.txt",
    "",
    "http://",
    "http://h:99999/",
    "http://h:port/",
])
def test_uncrawlable_url_raises_invalid_url_naming_it(url: str) -> None:
    with pytest.raises(InvalidURL) as info:
        normalize_url(url)
    assert repr(url) in str(info.value)
    assert info.value.url == url


def test_non_string_url_raises_invalid_url() -> None:
    with pytest.raises(InvalidURL):
        normalize_url(None)  # type: ignore[arg-type]


def test_invalid_url_message_says_why() -> None:
    with pytest.raises(InvalidURL, match="no host"):
        normalize_url("http://")
    with pytest.raises(InvalidURL, match="'mailto' is not http or https"):
        normalize_url("mailto:a@b.c")


# --- url_host --------------------------------------------------------------------------

@pytest.mark.parametrize("url, host", [
    ("http://example.com/a", "example.com"),
    ("http://example.com:8080/a", "example.com:8080"),
    ("http://user:pw@example.com:8080/a", "example.com:8080"),
    ("http://[::1]:8080/", "[::1]:8080"),
])
def test_url_host_is_host_and_non_default_port_without_userinfo(url: str, host: str) -> None:
    assert url_host(url) == host


def test_url_host_of_normalised_url_has_no_default_port() -> None:
    assert url_host(normalize_url("https://Example.com:443/x")) == "example.com"


# --- task_id ---------------------------------------------------------------------------

URL = "http://example.com/page"


def test_task_id_is_32_lowercase_hex_digits() -> None:
    assert re.fullmatch(r"[0-9a-f]{32}", task_id("proj", URL))


def test_task_id_is_stable_across_calls() -> None:
    assert task_id("proj", URL) == task_id("proj", URL)


def test_task_id_is_a_known_value() -> None:
    # pinned so a change to the hashing (which would orphan every existing row) is noticed
    assert task_id("p", "http://a/") == "ea592d62ecf23783bbe88b98ff998db5"


def test_task_id_differs_per_project() -> None:
    assert task_id("one", URL) != task_id("two", URL)


def test_task_id_differs_per_url() -> None:
    assert task_id("proj", URL) != task_id("proj", URL + "2")


def test_task_id_is_equal_for_two_spellings_after_normalisation() -> None:
    a = normalize_url("HTTP://Example.com:80/page?b=2&a=1#top")
    b = normalize_url("http://example.com/page?a=1&b=2")
    assert task_id("proj", a) == task_id("proj", b)


def test_task_id_differs_for_post_and_get() -> None:
    assert task_id("proj", URL, "POST") != task_id("proj", URL, "GET")
    assert task_id("proj", URL, "POST", b"q=1") != task_id("proj", URL, "GET")


def test_task_id_differs_for_different_post_bodies() -> None:
    assert task_id("proj", URL, "POST", b"q=1") != task_id("proj", URL, "POST", b"q=2")


def test_task_id_treats_str_and_bytes_bodies_alike() -> None:
    assert task_id("proj", URL, "POST", "q=é") == task_id("proj", URL, "POST", "q=é".encode("utf-8"))


def test_task_id_method_is_case_insensitive() -> None:
    assert task_id("proj", URL, "post", b"x") == task_id("proj", URL, "POST", b"x")
    assert task_id("proj", URL, "get") == task_id("proj", URL)


def test_get_without_body_equals_get_with_body_none() -> None:
    assert task_id("proj", URL) == task_id("proj", URL, "GET") == task_id("proj", URL, "GET", None)
