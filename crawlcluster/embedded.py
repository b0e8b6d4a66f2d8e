"""The one-command crawl: the same scheduler and the same four tasks in one process.

No Redis and no Postgres: Celery's in-memory transport carries the messages between a
worker running in a thread (threads pool, all four queues) and the scheduler's tick loop
in the calling thread, and an SQLite file holds the frontier and the results. The cluster
is this same code with a Redis URL and a Postgres URL.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable

from crawlcluster import settings as cluster_settings
from crawlcluster.database.write_lock import hold_write_lock, release_write_lock
from crawlcluster.errors import CrawlClusterError
from crawlcluster.stages import FETCH, QUEUES, RENDER

logger = logging.getLogger(__name__)

WORKER_THREADS = 12
# After a first Ctrl-C or SIGTERM: how long pages already sent may take to finish
STOP_GRACE_SECONDS = 5.0
FEED_POLL_SECONDS = 0.5
# the longest the embedded worker's consumer waits for a message before it checks for "stop"
DRAIN_TIMEOUT_SECONDS = 0.05
# how often the loop reads the row counts: the crawl ends at most this long after its last row
IDLE_POLL_SECONDS = 0.1
# the longest the loop waits for a task to end before the scheduler's next tick
TICK_WAIT_SECONDS = 0.05
FAILURES_SHOWN = 5
# the embedded scheduler claims at most this many times fetch_concurrency rows per tick
EMBEDDED_CLAIM_FACTOR = 2
# tasks whose end changes no row (see on_task_end in run_embedded)
_QUIET_TASKS = frozenset({FETCH.task, RENDER.task})


@dataclass
class EmbeddedResult:
    project: str
    stats: dict[str, Any]  # Crawl.stats(): rows per state (robots.txt rows included), items, figures
    elapsed_seconds: float
    database_path: str | None  # the frontier file when it is kept (--db, or an interrupted run)
    exported: int  # items in the output file
    pages: dict[str, int]  # rows per state without the robots.txt rows: what the user calls pages
    failure_counts: dict[str, int]  # failed rows per kind (Crawl.failure_counts())
    failures: list[dict[str, Any]]  # the first few failed rows with their reasons
    interrupted: str | None = None  # "SIGINT" or "SIGTERM" when a signal stopped the crawl
    temporary_database: bool = False  # database_path is a temporary file kept for a resume
    worker_finished: bool = True  # False: a page still hangs in the worker (leave with os._exit)
    # held when a page still hangs: nothing more is stored, so the output file holds exactly
    # the items of the rows that are done; released by release() or the process's end
    frontier_lock: Any = None

    def release(self) -> None:
        """Give SQLite's write lock back; the pooled connection gets back the isolation
        level it had, so that the next user of the pool (a later crawl in this process)
        gets an ordinary connection."""
        if self.frontier_lock is not None:
            lock, self.frontier_lock = self.frontier_lock, None
            release_write_lock(lock)

    @property
    def pages_per_second(self) -> float:
        finished = self.pages["done"] + self.pages["failed"]
        return finished / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0


class StopNow(BaseException):
    """A second Ctrl-C: leave at once, keeping what is in the output file.

    ``database_path`` is set by :func:`run_embedded` on the way out: the frontier file it
    keeps (a temporary one too), so that the caller can say where it is and how to resume."""

    database_path: str | None = None


class _EmbeddedWorker:
    """A Celery worker consuming every stage's queue in a background thread."""

    def __init__(self, app: Any, concurrency: int) -> None:
        from celery.worker import WorkController

        self.ready = threading.Event()
        self.stopped = False
        self.controller = WorkController(
            app=app,
            hostname=f"embedded-{os.getpid()}@localhost",
            pool="threads",
            concurrency=concurrency,
            queues=list(QUEUES),
            ready_callback=self._on_ready,
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            loglevel=logging.WARNING,
        )
        self.thread = threading.Thread(target=self.controller.start, name="crawlcluster-embedded-worker",
                                       daemon=True)

    def _on_ready(self, consumer: Any) -> None:
        """Celery's loop for a transport without events (memory) waits up to 2 s in
        ``drain_events`` before it looks at "stop" again, which was most of a finished
        crawl's exit time; a shorter wait here lets :meth:`stop` return within
        DRAIN_TIMEOUT_SECONDS. The transport (:mod:`crawlcluster.memory_transport`) wakes the
        consumer when a message is put, so the shorter wait costs only a loop turn each time
        it passes."""
        connection = consumer.connection
        drain = connection.drain_events

        def drain_briefly(**kwargs: Any) -> Any:
            timeout = kwargs.pop("timeout", None)
            timeout = DRAIN_TIMEOUT_SECONDS if timeout is None else min(timeout, DRAIN_TIMEOUT_SECONDS)
            return drain(timeout=timeout, **kwargs)

        connection.drain_events = drain_briefly
        self.ready.set()

    def start(self) -> None:
        from celery.worker import state

        # Celery keeps "stop now" in module state; a worker of an earlier crawl in this
        # process that was left with a hung page (stop() returned False) leaves it set,
        # and this worker would stop at its first loop
        state.should_terminate = None
        state.should_stop = None
        self.thread.start()
        if not self.ready.wait(30):
            raise CrawlClusterError("the embedded worker did not start within 30s")

    def stop(self, timeout_seconds: float = 30.0) -> bool:
        """Stop consuming and wait up to ``timeout_seconds`` for the tasks in hand; False
        when a task still runs then (a page hanging on a slow server), which the caller
        leaves to end with the process."""
        from celery.worker import state

        if self.stopped or not self.thread.is_alive():
            return not self.thread.is_alive()
        self.stopped = True
        state.should_terminate = 0
        # the controller's stop waits for the pool's threads: in a thread of its own, so
        # that the wait is bounded
        stopper = threading.Thread(target=self.controller.stop, kwargs={"in_sighandler": False},
                                   name="crawlcluster-embedded-stop", daemon=True)
        stopper.start()
        deadline = time.monotonic() + timeout_seconds
        stopper.join(timeout_seconds)
        self.thread.join(max(0.0, deadline - time.monotonic()))
        finished = not stopper.is_alive() and not self.thread.is_alive()
        if finished:
            state.should_terminate = None
        return finished


def configure_embedded(database_path: str) -> Any:
    """Point settings and the Celery app at an SQLite file and the in-memory transport."""
    from crawlcluster.app import app

    # bodies never leave the process: compressing them costs CPU for nothing; rows are held
    # by the one worker from a batch's start, and released at the next start if it dies
    cluster_settings.configure(database_url=f"sqlite:///{database_path}", broker_url="memory://localhost/",
                               body_compress_level=0, hold_on_receipt=False)
    app.conf.update(
        broker_url="memory://localhost/",
        # kombu's memory queues, with consumers woken by each put instead of polling every
        # few ms (celeryconfig names the Redis transport for a redis:// broker_url)
        broker_transport="crawlcluster.memory_transport:Transport",
        # a message stays a Python object in this process: kombu's virtual channels would
        # base64-encode every body (page bodies included) on put and decode it on get
        broker_transport_options={"body_encoding": None},
        worker_send_task_events=False,
    )
    # the app caches its broker connections and publishers: made earlier in this process for
    # another broker (a cluster's Redis, through the Python API or a task run in-process), they
    # would send this crawl's messages there and no worker of its own would see them
    app._pool = None
    app.amqp._producer_pool = None
    return app


def allow_named_spider(target: Any) -> None:
    """The spider a person names for a crawl on this machine (a class or an import path) is
    theirs to run: its module joins ``spider_packages`` here, with no setting to write.
    Workers elsewhere still import only what their own setting allows."""
    from crawlcluster.spider import spider_path, split_spider_path

    if isinstance(target, type):
        path = spider_path(target)
    elif isinstance(target, str) and "://" not in target and ":" in target:
        path = target
    else:
        return
    module = split_spider_path(path)[0]
    own = cluster_settings.current().spider_packages
    cluster_settings.configure(spider_packages=",".join(p for p in (own, module) if p))


def release_queued_rows(engine: Any, now: float | None = None) -> int:
    """Make rows left ``queued`` by an earlier run of this file pending again; return how many.

    An embedded frontier belongs to one process at a time, so a queued row at start was
    claimed by a run that stopped (Ctrl-C, kill) before its page was stored: no worker can
    still hold it, and waiting for its deadline (queued_deadline_seconds) would only stall
    the resume. Hosts whose robots.txt was being fetched are asked again."""
    from crawlcluster.database import hosts, tasks

    now = time.time() if now is None else now
    with engine.begin() as conn:
        released = tasks.release_queued(conn, now)
        hosts.release_fetching(conn, now)
    if released:
        logger.info("%d rows left queued by an earlier run are pending again", released)
    return released


def run_embedded(
    target: str | Iterable[str] | type,
    *,
    project: str | None = None,
    output: str | None = None,
    fmt: str | None = None,
    feed: Any = None,
    max_pages: int | None = None,
    max_depth: int | None = None,
    database_path: str | None = None,
    progress: bool = True,
    timeout_seconds: float | None = None,
    settings: dict[str, Any] | None = None,
    spider_kwargs: dict[str, Any] | None = None,
    stop: threading.Event | None = None,
    stop_reason: Any = None,
    grace_seconds: float = STOP_GRACE_SECONDS,
    keep_formulas: bool = False,
    console: Any = None,
) -> EmbeddedResult:
    """Crawl ``target`` (URLs, a Spider subclass or its import path) on this machine alone
    and write the items to ``output`` (or to an opened :class:`crawlcluster.feeds.Feed`)
    while they are stored, so an interrupted or killed crawl keeps every item it stored.

    A given ``database_path`` keeps the frontier, so a second run of the same project
    resumes it (rows an earlier run left queued are fetched; done pages are not); by
    default a temporary file is used and removed, unless the crawl is stopped.

    ``stop`` set (the CLI sets it on the first Ctrl-C or SIGTERM) stops dispatching; pages
    already sent get ``grace_seconds`` to finish; then the items are written and the
    result says ``interrupted`` (``stop_reason()`` names the signal).

    ``console(database_url)``, when given, starts what serves this crawl's file while it runs
    (``crawl --web``: :func:`crawlcluster.web.embedded.start_console`) and returns it; its
    ``stop()`` is called when the crawl ends.
    """
    from celery import signals

    from crawlcluster.client import Crawl
    from crawlcluster.db import dispose_all, get_engine
    from crawlcluster.dispatch.dispatcher import Dispatcher
    from crawlcluster.feeds import FeedSync, open_feed
    from crawlcluster.progress import CrawlProgress
    from crawlcluster.submission import submit

    if feed is None and output:
        # before anything is fetched: a bad path fails now; a CSV quotes formula-leading
        # cells unless keep_formulas
        feed = open_feed(output, fmt, keep_formulas=keep_formulas)
    temp_dir = None
    if database_path is None:
        temp_dir = tempfile.mkdtemp(prefix="crawlcluster-")
        database_path = str(Path(temp_dir) / "crawl.db")
    app = configure_embedded(database_path)
    allow_named_spider(target)
    started = time.monotonic()
    worker = _EmbeddedWorker(app, WORKER_THREADS)
    dispatcher = None
    sync = None
    keep_database = temp_dir is None
    interrupted: str | None = None
    leaving_now = False
    frontier_lock = None
    web = None
    finished = threading.Event()  # set when a task of the worker ends that may let more rows through

    def on_task_end(task: Any = None, **_kwargs: Any) -> None:
        # a fetch (or render) ends having changed no row: its pages are still queued, in
        # the parse queue, so no host slot is free and no link is new; a tick then claimed
        # nothing and cost a third of the ticks' CPU. Parse (new links) and store (rows
        # leave queued) wake the loop; TICK_WAIT_SECONDS bounds everything else.
        if getattr(task, "name", None) not in _QUIET_TASKS:
            finished.set()

    try:
        engine = get_engine()
        release_queued_rows(engine)
        crawl = submit(target, project, max_pages=max_pages, max_depth=max_depth, settings=settings,
                       spider_kwargs=spider_kwargs)
        if console is not None:
            web = console(f"sqlite:///{database_path}")
        if feed is not None:
            sync = FeedSync(feed, engine, crawl.project)
            sync.start()
        signals.task_postrun.connect(on_task_end, weak=False)
        worker.start()
        own = cluster_settings.current()
        # one fetch process: rows claimed beyond twice what it fetches at once only wait in the
        # in-memory queue, and a claim reads its room and spare candidates every tick (up to
        # claim_batch_size + 500 rows to send the few a host's free slots let through)
        claim_rows = min(own.claim_batch_size,
                         max(own.fetch_batch_size, EMBEDDED_CLAIM_FACTOR * own.fetch_concurrency))
        dispatcher = Dispatcher.from_settings(app, replace(own, tick_seconds=min(own.tick_seconds, 0.05),
                                                           claim_batch_size=claim_rows))
        deadline = None if timeout_seconds is None else started + timeout_seconds
        with CrawlProgress(crawl.project, enabled=progress) as bar:
            last_poll = last_feed = 0.0
            stopping_until = None
            while True:
                if stop is not None and stop.is_set() and stopping_until is None:
                    interrupted = (stop_reason() if stop_reason else None) or "SIGINT"
                    stopping_until = time.monotonic() + grace_seconds
                    dispatcher.flush()  # what was claimed is sent; nothing more is claimed
                wait = dispatcher.tick() if stopping_until is None else 0.05
                now = time.monotonic()
                if sync is not None and now - last_feed >= FEED_POLL_SECONDS:
                    last_feed = now
                    sync.poll()
                if now - last_poll >= IDLE_POLL_SECONDS:
                    last_poll = now
                    # row counts only (the figures cost a dozen queries); what the crawl waits
                    # for only when the bar shows it
                    stats = crawl.stats(figures=False, waiting=bar.enabled)
                    bar.update(stats)
                    if stopping_until is not None and (stats["queued"] == 0 or now > stopping_until):
                        break
                    if crawl.is_idle(stats):
                        # a tick marks the project finished when it finds nothing open; this
                        # loop may see the crawl idle first (its ticks wait for a task to end)
                        dispatcher.tick()
                        dispatcher.flush()
                        break
                    if deadline is not None and now > deadline:
                        raise CrawlClusterError(
                            f"embedded crawl of {crawl.project} timed out after {timeout_seconds}s")
                # the next tick when a task ends (a host slot may be free) or the scheduler's
                # own wait has passed, not every 20 ms: ticks were a quarter of the crawl's CPU
                finished.wait(min(wait, TICK_WAIT_SECONDS))
                finished.clear()
        # after a stop, what is left of the grace (at least a second to shut down cleanly)
        stop_timeout = 30.0 if stopping_until is None else max(1.0, stopping_until - time.monotonic())
        worker_finished = worker.stop(timeout_seconds=stop_timeout)
        frontier_lock = None if worker_finished else hold_write_lock(engine)
        elapsed = time.monotonic() - started
        exported = sync.finish() if sync is not None else 0
        keep_database = keep_database or interrupted is not None
        final = crawl.stats()
        return EmbeddedResult(
            crawl.project, final, elapsed, database_path if keep_database else None, exported,
            pages=final["pages"], failure_counts=Crawl(crawl.project).failure_counts(),
            failures=Crawl(crawl.project).failures(limit=FAILURES_SHOWN), interrupted=interrupted,
            temporary_database=temp_dir is not None and keep_database, worker_finished=worker_finished,
            frontier_lock=frontier_lock)
    except StopNow as exc:
        leaving_now = True  # a second Ctrl-C: the file is closed as it is, the frontier kept
        keep_database = True
        exc.database_path = database_path
        raise
    finally:
        signals.task_postrun.disconnect(on_task_end)
        if web is not None:
            web.stop()
        if sync is not None:
            sync.close()
        if not leaving_now and frontier_lock is None:
            if dispatcher is not None:
                dispatcher.close()
            worker.stop()  # its worker_shutdown signal closes the stages' per-process resources
            dispose_all()
            if temp_dir is not None and not keep_database:
                shutil.rmtree(temp_dir, ignore_errors=True)
