"""The one-command crawl: the same scheduler and the same four tasks in one process.

No Redis and no Postgres: Celery's in-memory transport carries the messages between a
worker running in a thread (threads pool, all four queues) and the scheduler's tick loop
in the calling thread, and an SQLite file holds the frontier and the results. The cluster
is this same code with a Redis URL and a Postgres URL.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from crawlcluster import settings
from crawlcluster.errors import CrawlClusterError

logger = logging.getLogger(__name__)

WORKER_THREADS = 12


@dataclass
class EmbeddedResult:
    project: str
    stats: dict[str, Any]
    elapsed_seconds: float
    database_path: str | None  # None when a temporary file was used
    exported: int

    @property
    def pages_per_second(self) -> float:
        finished = self.stats["done"] + self.stats["failed"]
        return finished / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0


class _EmbeddedWorker:
    """A Celery worker consuming every stage's queue in a background thread."""

    def __init__(self, app: Any, concurrency: int) -> None:
        from celery.worker import WorkController

        self.ready = threading.Event()
        self.controller = WorkController(
            app=app,
            hostname=f"embedded-{os.getpid()}@localhost",
            pool="threads",
            concurrency=concurrency,
            queues=["fetch", "render", "parse", "store"],
            ready_callback=lambda _consumer: self.ready.set(),
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            loglevel=logging.WARNING,
        )
        self.thread = threading.Thread(target=self.controller.start, name="crawlcluster-embedded-worker", daemon=True)

    def start(self) -> None:
        self.thread.start()
        if not self.ready.wait(30):
            raise CrawlClusterError("the embedded worker did not start within 30s")

    def stop(self) -> None:
        from celery.worker import state

        if not self.thread.is_alive():
            return
        state.should_terminate = 0
        self.controller.stop(in_sighandler=False)
        self.thread.join(30)
        state.should_terminate = None


def configure_embedded(database_path: str) -> Any:
    """Point settings and the Celery app at an SQLite file and the in-memory transport."""
    from crawlcluster.app import app

    settings.configure(database_url=f"sqlite:///{database_path}", broker_url="memory://localhost/")
    app.conf.update(
        broker_url="memory://localhost/",
        broker_transport_options={"polling_interval": 0.005},
        worker_send_task_events=False,
    )
    return app


def run_embedded(
    target: str | Iterable[str] | type,
    *,
    project: str | None = None,
    output: str | None = None,
    fmt: str = "jsonl",
    max_pages: int | None = None,
    max_depth: int | None = None,
    database_path: str | None = None,
    progress: bool = True,
    timeout_seconds: float | None = None,
    settings: dict[str, Any] | None = None,
) -> EmbeddedResult:
    """Crawl ``target`` (URLs, a Spider subclass or its import path) on this machine alone
    and write the items to ``output``. A given ``database_path`` keeps the frontier, so a
    second run of the same project resumes it; by default a temporary file is used."""
    from crawlcluster.client import submit
    from crawlcluster.db import dispose_all, get_engine
    from crawlcluster.progress import CrawlProgress
    from crawlcluster.scheduler import Dispatcher

    temp_dir = None
    if database_path is None:
        temp_dir = tempfile.TemporaryDirectory(prefix="crawlcluster-")
        database_path = str(Path(temp_dir.name) / "crawl.db")
    app = configure_embedded(database_path)
    started = time.monotonic()
    worker = _EmbeddedWorker(app, WORKER_THREADS)
    dispatcher = None
    try:
        get_engine()
        crawl = submit(target, project, max_pages=max_pages, max_depth=max_depth, settings=settings)
        worker.start()
        dispatcher = Dispatcher.from_settings(app)
        dispatcher.tick_seconds = min(dispatcher.tick_seconds, 0.05)
        deadline = None if timeout_seconds is None else started + timeout_seconds
        with CrawlProgress(crawl.project, enabled=progress) as bar:
            last_poll = 0.0
            while True:
                wait = dispatcher.tick()
                now = time.monotonic()
                if now - last_poll >= 0.25:
                    last_poll = now
                    stats = crawl.stats()
                    bar.update(stats)
                    if crawl.is_idle(stats):
                        break
                    if deadline is not None and now > deadline:
                        raise CrawlClusterError(f"embedded crawl of {crawl.project} timed out after {timeout_seconds}s")
                time.sleep(min(wait, 0.02))
        elapsed = time.monotonic() - started
        exported = 0
        if output:
            with open(output, "w", encoding="utf-8", newline="") as out:
                exported = crawl.export(out, fmt)
        kept = None if temp_dir is not None else database_path
        return EmbeddedResult(crawl.project, crawl.stats(), elapsed, kept, exported)
    finally:
        if dispatcher is not None:
            dispatcher.close()
        worker.stop()  # its worker_shutdown signal closes the stages' per-process resources
        dispose_all()
        if temp_dir is not None:
            temp_dir.cleanup()
