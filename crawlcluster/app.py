"""The Celery application, and the worker that picks its pool from the queues it serves.

``celery -A crawlcluster worker -Q fetch`` must do the right thing with no more flags:
fetching is I/O-bound (one process keeps ``fetch_concurrency`` requests in flight on an
asyncio loop, fed by a few threads), parsing is CPU-bound (one process per core), and
storing is database-bound (a few threads that write whole batches). An explicit ``-P`` or
``-c`` on the command line always wins.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import sys
from typing import Any, Iterable

import click
from celery import Celery
from celery.apps.worker import Worker
from celery.signals import task_postrun
from kombu.utils.objects import cached_property

from crawlcluster import settings
from crawlcluster.errors import ConfigurationError
from crawlcluster.flower_guard import is_flower_command, prepare_flower
from crawlcluster.settings import Settings
from crawlcluster.stages import PARSE, QUEUES, RENDER, STORE

logger = logging.getLogger(__name__)

TASK_MODULES = ["tasks.fetch", "tasks.render", "tasks.parse", "tasks.store", "tasks.hooks"]


def _queues_of(value: Any) -> list[str]:
    if not value:
        return list(QUEUES)
    if isinstance(value, str):
        return [q.strip() for q in value.split(",") if q.strip()]
    return [str(q) for q in value]


def _named_on_command_line(flags: Iterable[str]) -> bool:
    for arg in sys.argv[1:]:
        for flag in flags:
            if arg == flag or arg.startswith(flag + "="):
                return True
            if not flag.startswith("--") and arg.startswith(flag):  # -Pthreads, -c8
                return True
    return False


def role_defaults(queues: list[str], s: Settings) -> tuple[str, int]:
    """The pool and concurrency a worker serving ``queues`` gets by default under ``s``."""
    queue_set = set(queues)
    cpus = os.cpu_count() or 1
    fetch_threads = max(2, math.ceil(s.fetch_concurrency / s.fetch_batch_size) + 2)
    if queue_set <= {PARSE.queue}:
        return "prefork", s.parse_concurrency or cpus
    if queue_set <= {STORE.queue}:
        return "threads", s.store_concurrency
    if queue_set <= {RENDER.queue}:
        # one browser per process; pages in flight are the renderer's own setting
        return "prefork", 1
    # fetch alone, or several stages in one worker: threads keep fetches in flight and
    # let parse and store share the process.
    return "threads", fetch_threads


def render_unavailable(*, chromium_path: str | None = None) -> str | None:
    """Why this machine cannot render, as a sentence, or None when it can: pyppeteer (the
    render extra) is missing, or, when ``chromium_path`` is given, Chromium is not there.
    The one check behind a render worker's start and ``crawl --render``."""
    if importlib.util.find_spec("pyppeteer") is None:
        return ("rendering needs pyppeteer, the render extra: pip install 'crawlcluster[render]' "
                "(and Chromium)")
    path = chromium_path
    if path is not None and not (os.path.isfile(path) and os.access(path, os.X_OK)):
        return (f"rendering needs Chromium at {path!r} (CRAWLCLUSTER_CHROMIUM_PATH), which is not there; "
                "install it (apt-get install chromium)")
    return None


def check_render_extra(queues: list[str]) -> None:
    """Refuse to start a worker that would consume ``render`` without pyppeteer.

    Such a worker would take render messages that a worker with a browser could serve and
    fail every one of them; refusing at start shows the mistake where it was made, and the
    rows wait in the render queue for a worker that can render them.
    """
    missing = render_unavailable() if RENDER.queue in queues else None
    if missing:
        named = "-Q " + ",".join(q for q in QUEUES if q != RENDER.queue)
        raise click.ClickException(
            f"this worker would consume the render queue: {missing}; "
            f"or leave render out of its queues ({named})")


class CrawlWorker(Worker):
    """A worker whose pool and concurrency default to what its queues need."""

    def setup_defaults(self, concurrency=None, pool=None, pool_cls=None, queues=None, **kwargs):
        queue_list = _queues_of(queues if queues is not None else kwargs.get("queues"))
        check_render_extra(queue_list)
        pool_name, default_concurrency = role_defaults(queue_list, settings.current())
        if not _named_on_command_line(("-P", "--pool")):
            pool, pool_cls = pool_name, None
        if not concurrency and not _named_on_command_line(("-c", "--concurrency")):
            concurrency = default_concurrency
        logger.info("worker for queues %s: pool=%s concurrency=%s", ",".join(queue_list), pool or pool_cls,
                    concurrency)
        return super().setup_defaults(concurrency=concurrency, pool=pool, pool_cls=pool_cls, **kwargs)


class CrawlCelery(Celery):
    """The crawlcluster Celery app: its ``Worker`` is :class:`CrawlWorker`."""

    @cached_property
    def Worker(self):  # noqa: N802 - Celery's name
        return self.subclass_with_self("crawlcluster.app:CrawlWorker")


def export_flower_auth(auth: str) -> None:
    """Hand ``auth`` (the flower_auth setting, ``CRAWLCLUSTER_FLOWER_AUTH``) to Flower as
    ``FLOWER_BASIC_AUTH``.

    Flower reads its options from ``FLOWER_*`` variables *after* ``-A crawlcluster`` has
    imported this module, so exporting the variable here is what lets the plain
    ``celery -A crawlcluster flower`` ask for a password, with no flowerconfig.py to
    ship. An explicit ``FLOWER_BASIC_AUTH`` (or ``--basic-auth``) still wins.
    """
    if not auth or os.environ.get("FLOWER_BASIC_AUTH"):
        return
    entries = auth.split(",")
    for number, credential in enumerate(entries, 1):
        user, sep, password = credential.partition(":")
        if not (user and sep and password):
            # the entry may be a password alone: never echo it, only where it is and its size
            raise ConfigurationError(
                "CRAWLCLUSTER_FLOWER_AUTH must be user:password (several: comma-separated); entry "
                f"{number} of {len(entries)} ({len(credential)} characters, not shown) has no "
                f"{'user' if sep and not user else 'password' if sep else 'user: before a password'}")
    os.environ["FLOWER_BASIC_AUTH"] = auth


def database_outage_retry(s: Settings) -> dict[str, Any]:
    """Task options (``@app.task(**database_outage_retry(s))``) for a task that writes to
    the database: when the database cannot be reached (a restart, a failover, the network)
    the task is retried with an exponential back-off (1, 2, 4 ... s, at most 30 s apart),
    ``s.database_outage_retries`` times, instead of failing. A failed task is acknowledged
    (acks_late acks failures too), so without this its pages would wait for their rows'
    deadline (``queued_deadline_seconds``); a retry sends the same message again and
    acknowledges the old one, and the task's writes are idempotent."""
    from sqlalchemy.exc import InterfaceError, OperationalError

    return {"autoretry_for": (OperationalError, InterfaceError), "max_retries": s.database_outage_retries,
            "retry_backoff": 1, "retry_backoff_max": 30, "retry_jitter": False}


def _count_finished_task(sender: Any = None, state: str | None = None, **_kw: Any) -> None:
    from crawlcluster.metrics import count_task

    if sender is not None and state:
        count_task(sender.name, state)


def create_app() -> CrawlCelery:
    export_flower_auth(settings.current().flower_auth)
    if is_flower_command(sys.argv):
        prepare_flower(settings.current())  # 127.0.0.1 unless configured; no open non-loopback bind
    app = CrawlCelery("crawlcluster", include=TASK_MODULES)
    app.config_from_object("celeryconfig")
    task_postrun.connect(_count_finished_task, weak=False)
    return app


app = create_app()
