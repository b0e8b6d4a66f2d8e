"""What the console's dashboard shows, as plain JSON-ready dicts: each project's row (from
``Crawl.stats``' figures, read for every project at once by
:func:`crawlcluster.overview.project_stats`, as ``crawlcluster status`` reads them), the
pipeline strip (messages waiting per stage queue and the workers consuming each) and the
scheduler's health.

The same dicts fill the page when it is served and ``/api/dashboard`` when the page's script
refreshes itself, so what a person sees first and what it turns into agree.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from crawlcluster.dashboard import human_bytes, shown_eta, shown_status
from crawlcluster.database import projects as lifecycle
from crawlcluster.db import get_engine
from crawlcluster.dispatch import lease
from crawlcluster.metrics import queue_depths
from crawlcluster.overview import project_stats
from crawlcluster.stages import QUEUES

logger = logging.getLogger(__name__)

# the workers consuming each queue are asked (a Celery broadcast, in the background) this often
CONSUMERS_CACHE_SECONDS = 5.0
# how long a broadcast waits for workers' answers
CONSUMERS_REPLY_SECONDS = 1.0
# the progress bars' segments, in stacking order
BAR_PARTS = ("pending", "done", "retried", "failed")
WINDOW_LABELS = (("5m", "5 min"), ("1h", "1 hour"), ("1d", "1 day"), ("all", "all time"))


def _bar(counts: dict[str, int]) -> dict[str, Any]:
    total = sum(counts.get(part, 0) for part in BAR_PARTS)
    return {"total": total,
            "parts": [{"name": part, "count": counts.get(part, 0),
                       "percent": round(100.0 * counts.get(part, 0) / total, 2) if total else 0.0}
                      for part in BAR_PARTS]}


def project_row(row: dict[str, Any], stats: dict[str, Any]) -> dict[str, Any]:
    """One dashboard row: ``row`` is the projects row, ``stats`` its ``Crawl.stats()``."""
    pages = stats["pages"]
    windows = stats.get("windows") or {}
    bars = []
    for key, label in WINDOW_LABELS:
        counts = dict(windows.get(key) or {})
        if key == "all":
            # all time: the pages as the table holds them now (open ones pending)
            counts = {"pending": pages["pending"] + pages["queued"], "done": pages["done"],
                      "retried": int(stats.get("retries", 0)), "failed": pages["failed"]}
        bars.append({"window": key, "label": label, **_bar(counts)})
    status = shown_status(stats)
    return {
        "name": row["name"], "spider": row["spider"], "status": status,
        "pause_reason": stats.get("pause_reason"),
        "rate": row["rate"], "burst": row["burst"],
        "pages": {state: int(count) for state, count in pages.items()},
        "items": int(stats.get("items", 0)),
        "bars": bars,
        "pages_per_second": float(stats.get("pages_per_second", 0.0)),
        "eta": shown_eta(stats) if status != "finished" else "done",
        "bytes": int(stats.get("bytes", 0)), "bytes_text": human_bytes(stats.get("bytes", 0)),
        "waiting": [reason for reason in stats.get("waiting") or []
                    if reason != (stats.get("scheduler") or {}).get("message")],
    }


class Consumers:
    """The workers consuming each stage queue, asked with a Celery broadcast
    (``inspect().active_queues()``, waiting CONSUMERS_REPLY_SECONDS for the answers) by a
    thread of its own every CONSUMERS_CACHE_SECONDS, never inside a request: a request reads
    the last answer. None on the embedded in-memory transport (no worker outside the crawl),
    and until the first answer."""

    def __init__(self, broker_url: str) -> None:
        self.watched = broker_url.split("://", 1)[0] in ("redis", "rediss")
        self._seen: dict[str, list[str]] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self.watched:
            self._thread = threading.Thread(target=self._refresh, name="console-consumers", daemon=True)
            self._thread.start()

    def _ask(self) -> dict[str, list[str]]:
        from crawlcluster.app import app

        replies = app.control.inspect(timeout=CONSUMERS_REPLY_SECONDS).active_queues() or {}
        by_queue: dict[str, list[str]] = {queue: [] for queue in QUEUES}
        for worker, queues in sorted(replies.items()):
            for queue in queues or []:
                by_queue.setdefault(queue.get("name", "?"), []).append(worker)
        return by_queue

    def _refresh(self) -> None:
        while not self._stop.is_set():
            try:
                self._seen = self._ask()
            except Exception as exc:  # noqa: BLE001 - the broker away: the strip says so
                logger.warning("could not ask the workers for their queues: %s", exc)
                self._seen = None
            self._stop.wait(CONSUMERS_CACHE_SECONDS)

    def current(self) -> dict[str, list[str]] | None:
        return self._seen

    def stop(self) -> None:
        """End the refreshing thread (at its next wait)."""
        self._stop.set()


def pipeline(broker_url: str, key_prefix: str, consumers: Consumers) -> list[dict[str, Any]]:
    """One entry per stage queue: messages waiting (None: not a Redis broker, or it is
    away) and the workers consuming it (None: unknown)."""
    try:
        depths = queue_depths(broker_url, key_prefix)
    except Exception as exc:  # noqa: BLE001 - the broker away: shown as unknown, not an error page
        logger.warning("could not read the queue lengths: %s", exc)
        depths = None
    seen = consumers.current()
    return [{"queue": queue, "waiting": None if depths is None else depths.get(queue, 0),
             "consumers": None if seen is None else seen.get(queue, [])} for queue in QUEUES]


def dashboard(database_url: str | None, broker_url: str, key_prefix: str,
              consumers: Consumers) -> dict[str, Any]:
    """Everything the dashboard shows, as one JSON-ready dict."""
    with get_engine(database_url).connect() as conn:
        rows = lifecycle.all_projects(conn)
        health = lease.scheduler_health(conn).as_dict()
        every = project_stats(conn, rows)
    projects = [project_row(row, every[row["name"]]) for row in rows]
    return {"projects": projects, "scheduler": health,
            "pipeline": pipeline(broker_url, key_prefix, consumers), "now": time.time()}
