"""Error texts as rows and hosts keep them: bounded in length, long URLs shortened.

Every writer of a row's or a host's ``error`` (:mod:`crawlcluster.database.outcomes`,
:mod:`crawlcluster.database.claims`, :mod:`crawlcluster.dispatch.robots`) passes its text
through :func:`bounded_error`, so no path stores a 1 MB URL quoted in a 1 MB error.
"""

from __future__ import annotations

import re

from crawlcluster import settings

# a run of characters without a space longer than this (a URL, a quoted status line) is
# shortened inside an error text, keeping its start and its end
LONG_WORD_CHARS = 200
_LONG_WORD = re.compile(r"\S{%d,}" % (LONG_WORD_CHARS + 1))


def _cut(text: str, keep: int, tail: int) -> str:
    """``text`` with its middle cut to ``keep`` characters in all, saying how many went."""
    head = max(keep - tail, 0)
    return f"{text[:head]}... [{len(text) - head - tail:,} characters cut] ...{text[len(text) - tail:]}"


def bounded_error(text: str | None, max_chars: int | None = None) -> str | None:
    """``text`` as a row or a host keeps it: each URL (any run without a space) at most
    about :data:`LONG_WORD_CHARS` characters, and the whole at most ``max_chars``
    (default: the ``max_error_chars`` setting) with its middle cut. A 1 MB URL that fails
    must not become a 1 MB error text in every row, log line and status line that quotes it."""
    if text is None:
        return None
    if max_chars is None:
        max_chars = settings.current().max_error_chars
    if len(text) > LONG_WORD_CHARS:
        text = _LONG_WORD.sub(lambda m: _cut(m.group(0), LONG_WORD_CHARS - 40, 40), text)
    if len(text) > max_chars:
        text = _cut(text, max_chars - 40, min(200, max_chars // 4))
    return text
