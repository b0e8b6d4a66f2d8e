"""What one page's render gives, shared by the renderer (which owns the browser) and the
page steps (which fill it in): the :class:`RenderResult`, and :class:`BrowserLost`, the one
failure the page steps raise rather than record. Kept apart so that neither of the two
imports the other's module for these types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from crawlcluster.errors import FetchError
from crawlcluster.messages import FetchEntry

__all__ = ["BrowserLost", "RenderResult"]


class BrowserLost(Exception):
    """The browser under a page crashed (``kind="crash"``) or hung (``kind="hung"``)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


@dataclass
class RenderResult:
    """What rendering one entry gave: the page as the browser left it, or an ``error``."""

    entry: FetchEntry
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    final_url: str | None = None
    js_result: Any = None
    screenshot: bytes | None = None
    error: FetchError | None = None
    attempts: int = 0
    elapsed_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None
