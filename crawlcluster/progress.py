"""A live progress bar for a crawl: pages finished out of pages known, and pages/s.

The total grows while the crawl discovers links, so the bar is honest about what is known
now rather than guessing the end. When nothing is in flight it says what the crawl waits
for (``Crawl.stats()["waiting"]``: a retry's back-off, a silent scheduler, a pause...).
"""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class CrawlProgress:
    """Context manager; ``update(stats)`` with a ``Crawl.stats()`` dict redraws the bar."""

    def __init__(self, project: str, *, enabled: bool = True) -> None:
        self.project = project
        self.enabled = enabled
        self.started = time.monotonic()
        self._progress: Progress | None = None
        self._task: Any = None

    def __enter__(self) -> "CrawlProgress":
        if self.enabled:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[detail]}"),
                TimeElapsedColumn(),
                console=Console(file=sys.stderr),
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(self.project, total=None, detail="")
        return self

    def update(self, stats: dict[str, Any]) -> None:
        if self._progress is None:
            return
        pages = stats.get("pages") or stats
        finished = pages["done"] + pages["failed"]
        known = finished + pages["pending"] + pages["queued"]
        self._progress.update(self._task, completed=finished, total=max(known, 1), detail=self.detail(stats))

    def detail(self, stats: dict[str, Any]) -> str:
        """The text beside the bar: pace and counts of pages (robots.txt rows left out)
        while pages are in flight; what the crawl waits for when none are (a silent
        scheduler is named either way)."""
        pages = stats.get("pages") or stats
        finished = pages["done"] + pages["failed"]
        elapsed = max(time.monotonic() - self.started, 1e-6)
        waiting = list(stats.get("waiting") or [])
        pace = f"{finished / elapsed:6.1f} pages/s  failed {pages['failed']}  queued {pages['queued']}"
        if waiting and not stats["queued"]:
            return f"failed {pages['failed']}  waiting: " + "; ".join(waiting)
        # queued rows that do not move: no scheduler, or no render worker to take them
        scheduler = (stats.get("scheduler") or {}).get("message")
        stuck = [w for w in waiting if w == scheduler or "render queue" in w]
        return pace + ("  waiting: " + "; ".join(stuck) if stuck else "")

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.stop()
