"""The XML feed, in the shape of Scrapy's XML exporter: ``<items>`` holding one ``<item>`` per
line, a field per key, a list as ``<value>`` children, a nested object as child fields.

Not every key is an XML name and not every character may appear in XML 1.0: a key's
characters that an element name cannot hold become ``_`` (and a leading digit, dot or
hyphen gets a ``_`` before it); control characters other than tab, newline and carriage
return are left out of text. ``None`` is an empty element; a number or a boolean is its
Python text (``12``, ``1.5``, ``True``), as Scrapy writes them."""

from __future__ import annotations

import re
from typing import Any
from xml.sax.saxutils import escape

from crawlcluster.feeds.base import Feed

XML_DECLARATION = '<?xml version="1.0" encoding="utf-8"?>\n'
# characters XML 1.0 cannot hold (C0 controls but tab, LF, CR; surrogates; U+FFFE, U+FFFF)
_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_NOT_NAME = re.compile(r"[^A-Za-z0-9_.\-\u00b7\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u037d\u037f-\u1fff"
                       r"\u200c\u200d\u2070-\u218f\u2c00-\u2fef\u3001-\ud7ff\uf900-\ufdcf\ufdf0-\ufffd]")


def element_name(key: str) -> str:
    """``key`` as an XML element name."""
    name = _NOT_NAME.sub("_", key) or "_"
    if name[0] in "0123456789.-\u00b7":
        name = "_" + name
    return name


def _text(value: Any) -> str:
    return escape(_ILLEGAL.sub("", str(value)))


def _field(name: str, value: Any) -> str:
    if value is None:
        return f"<{name}/>"
    if isinstance(value, dict):
        inner = "".join(_field(element_name(str(k)), v) for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        inner = "".join(_field("value", v) for v in value)
    else:
        inner = _text(value)
    return f"<{name}>{inner}</{name}>"


class XmlFeed(Feed):
    """``<items>`` written item by item: a whole document once closed (Ctrl-C, SIGTERM and a
    second Ctrl-C close it); after a ``kill -9`` only ``</items>`` is missing."""

    format = "xml"
    appendable = False

    def _begin(self) -> None:
        self.out.write(XML_DECLARATION + "<items>\n")
        self.out.flush()

    def _write_one(self, item: dict[str, Any]) -> None:
        self.out.write(_field("item", item) + "\n")

    def _end(self) -> None:
        self.out.write("</items>\n")
