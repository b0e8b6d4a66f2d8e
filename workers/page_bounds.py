"""What one page may add to the frontier, and the crawler-trap guard: the parse engine's bounds.

A hostile or broken site can offer an endless URL space: a calendar whose every day links
to the next (``/cal?d=N`` -> ``d=N+1``), relative links that repeat a path
(``/a/b/a/b/a/b/...``), a session id in every link. Each page of such a space looks new,
so deduplication never ends it. Two rules do, both settings, and both end the link that
would continue the trap as a ``failed`` row of kind ``trap`` whose error names the rule,
instead of fetching it:

* **shape chains** (``trap_shape_chain``): a URL's *shape* is its host, path and query with
  numbers and id-like tokens folded (``/cal?d=<n>``, ``/s/<id>/list``). A row remembers in
  its fetch options (``shape_run``) how many pages of its own shape led to it, each found
  on the previous one. A catalogue's items (found on listing pages of another shape) start
  at 0 and a paginated list's pages grow by one per page, while a trap grows without end;
  past the setting the chain stops.
* **repeated segments** (``trap_segment_repeats``): a run of path segments repeated back
  to back more often than the setting (Heritrix's "pathological path" rule).

The counts of what was dropped or stopped ride on the page's outcome (``bounds``) to the
store stage's statistics (``crawl_stats``' :data:`~crawlcluster.schema.BOUND_COLUMNS`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from crawlcluster.schema import BOUND_COLUMNS
from crawlcluster.urls import short_url, url_shape

# the statistics' names for what a page's bounds dropped or stopped (crawl_stats columns)
LINKS_TOO_LONG, LINKS_BAD_HOST, LINKS_OVER_LIMIT, HTML_DEPTH_CAPPED, TRAP_LINKS = BOUND_COLUMNS

# the fetch option a row carries its shape chain in (left out at 0, as on most rows)
SHAPE_RUN = "shape_run"
TRAP_KIND = "trap"

# a repeated run of path segments longer than this is not looked for (a cost bound)
MAX_REPEAT_UNIT = 8


def repeated_segments(url: str, max_repeats: int) -> tuple[str, int] | None:
    """The run of path segments ``url`` repeats back to back more than ``max_repeats`` times,
    and how often; None when none does (or ``max_repeats`` is 0)."""
    if max_repeats <= 0:
        return None
    segments = [s for s in urlsplit(url).path.split("/") if s]
    for unit in range(1, min(MAX_REPEAT_UNIT, len(segments) // (max_repeats + 1)) + 1):
        start = 0
        while start + unit <= len(segments):
            count = 1
            while segments[start:start + unit] == segments[start + count * unit:start + (count + 1) * unit]:
                count += 1
            if count > max_repeats:
                return "/".join(segments[start:start + unit]), count
            start += 1
    return None


@dataclass
class TrapGuard:
    """The trap rules for the links of one page: ``check`` says whether a link continues a
    trap (its error) and which shape run its row carries."""

    page_url: str
    page_run: int
    shape_chain: int
    segment_repeats: int
    _page_shape: str = field(init=False, default="")

    def __post_init__(self) -> None:
        self._page_shape = url_shape(self.page_url)

    @classmethod
    def for_page(cls, page_url: str, fetch_options: dict[str, Any] | None, settings: Any) -> TrapGuard:
        run = int((fetch_options or {}).get(SHAPE_RUN) or 0)
        return cls(page_url, run, settings.trap_shape_chain, settings.trap_segment_repeats)

    def check(self, url: str) -> tuple[int, str | None]:
        """(the shape run of ``url``'s row, the trap error or None)."""
        repeated = repeated_segments(url, self.segment_repeats)
        if repeated is not None:
            unit, count = repeated
            return 0, (f"crawler trap: the path repeats {unit!r} {count} times back to back "
                       f"(trap_segment_repeats={self.segment_repeats}); not followed")
        if url_shape(url) != self._page_shape:
            return 0, None
        run = self.page_run + 1
        if self.shape_chain and run >= self.shape_chain:
            return run, (f"crawler trap: {run} pages of the URL shape {short_url(self._page_shape, 120)} "
                         f"each found on the previous one (trap_shape_chain={self.shape_chain}); "
                         f"found on {short_url(self.page_url, 120)}, not followed")
        return run, None


def count_trap_rows(rows_of: dict[str, list[dict[str, Any]]], outcomes: dict[str, Any],
                    new_ids: set[str]) -> None:
    """Add to each page's outcome (``bounds``) the crawler-trap rows its links added that
    were new: each is a failed row the statistics count once, with its page's batch."""
    for task_id, rows in rows_of.items():
        traps = sum(1 for row in rows if row.get("_trap") and row["task_id"] in new_ids)
        if traps:
            outcome = outcomes[task_id]
            outcome.setdefault("bounds", {})[TRAP_LINKS] = traps
