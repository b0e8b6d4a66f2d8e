"""The render stage's own writes: screenshots, and the render_workers row that makes each
render process's browser counters (pages, recycles, crashes, hung kills, memory) visible.

Screenshots go straight to Postgres from the render worker: the parse stage does not need
the PNG, so it never travels through the broker.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Iterable

from sqlalchemy.engine import Engine

from crawlcluster.database import render

logger = logging.getLogger(__name__)


def save_screenshots(engine: Engine, project: str, shots: Iterable[tuple[str, str, bytes]]) -> int:
    """Store ``(task id, url, png)`` shots, replacing an earlier shot of the same task."""
    now = time.time()
    rows = [{"task_id": tid, "project": project, "url": url, "png": png, "created_at": now}
            for tid, url, png in shots]
    if not rows:
        return 0
    with engine.begin() as conn:
        render.replace_screenshots(conn, rows)
    return len(rows)


def record_render_worker(engine: Engine, hostname: str, stats: dict[str, Any], started_at: float) -> None:
    """Upsert this process's counters (``Renderer.stats()``) as one render_workers row."""
    now = time.time()
    keys = ("browser_pid", "browsers_launched", "pages_rendered", "render_failures", "recycles", "crashes",
            "hung_kills", "refused_requests", "browser_pss_bytes", "browser_rss_bytes")
    values = {key: stats[key] for key in keys}
    values["updated_at"] = now
    row = {"worker": f"{hostname}:{os.getpid()}", "hostname": hostname, "pid": os.getpid(),
           "started_at": started_at, **values}
    with engine.begin() as conn:
        render.record_render_worker(conn, row, values)
