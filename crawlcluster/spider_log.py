"""A spider's ``self.logger``: its lines say which project and which page they are about.

The parse engine runs each callback inside :func:`parsing` (project and URL in a context
variable, so threads and pages of one worker never mix them up); :class:`SpiderLogger` puts
them in front of the message and on the record (``record.project``, ``record.url``), so a
worker's log of many projects stays readable and a log handler can filter on them.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Iterator

__all__ = ["SpiderLogger", "parsing"]

_page: ContextVar[tuple[str | None, str | None]] = ContextVar("crawlcluster_page", default=(None, None))


@contextmanager
def parsing(project: str | None, url: str | None) -> Iterator[None]:
    """While the callback for ``url`` of ``project`` runs, spider log lines name them."""
    token = _page.set((project, url))
    try:
        yield
    finally:
        _page.reset(token)


class SpiderLogger(logging.LoggerAdapter):
    """``project P, url U: message``, with ``project`` and ``url`` on the record too."""

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        if not self.isEnabledFor(level):
            return
        project, url = _page.get()
        kwargs["extra"] = {**(kwargs.get("extra") or {}), "project": project, "url": url}
        where = ", ".join(part for part in (f"project {project}" if project else "",
                                            f"url {url}" if url else "") if part)
        if where:
            # a URL's own % must survive the message's % formatting
            msg = f"{where.replace('%', '%%') if args else where}: {msg}"
        self.logger.log(level, msg, *args, **kwargs)
