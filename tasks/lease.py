"""The worker's lease on rows, wired to Celery's signals: a message's rows are held from the
moment this worker receives it (a worker killed with messages reserved but not yet started
leaves their rows to the sweep too), and the heartbeat stops with the worker.

What holding means is :mod:`workers.lease`'s; each task holds its batch again when it starts
(in a prefork pool, under the child process's own lease) and drops what is no longer its.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import signals

from crawlcluster import settings
from crawlcluster.db import check_schema, get_engine
from crawlcluster.messages import entry_dispatch
from crawlcluster.stages import FETCH, PARSE, RENDER, STORE
from workers.lease import current_lease, stop_lease

logger = logging.getLogger(__name__)

# the stage tasks and the key of their message that lists its rows
BATCH_KEYS = {FETCH.task: "tasks", RENDER.task: "tasks", PARSE.task: "pages", STORE.task: "pages"}


@signals.task_received.connect
def _hold_received(request: Any = None, **_kwargs: Any) -> None:
    """Hold the rows of a stage message as soon as this worker has it reserved."""
    key = BATCH_KEYS.get(getattr(request, "name", None) or "")
    if key is None or not settings.current().hold_on_receipt:
        return
    try:
        args = request.args or [{}]
        batch = args[0].get(key) or []
        current_lease(get_engine()).hold({m["id"]: entry_dispatch(m) for m in batch})
    except Exception:  # noqa: BLE001 - the task holds its rows again when it starts
        logger.warning("could not hold the rows of a received %s message", request.name, exc_info=True)


@signals.worker_init.connect
def _check_schema_before_the_pool(**_kwargs: Any) -> None:
    """The worker checks the schema once, before it forks its pool: each prefork child then
    knows it is up to date (it imported Alembic and read every migration on its first task,
    about a CPU second per child). The check's connections are closed, not inherited."""
    try:
        check_schema()
    except Exception:  # noqa: BLE001 - the database away: each process checks on first use, as before
        logger.warning("could not check the database schema at worker start", exc_info=True)


@signals.worker_process_shutdown.connect
@signals.worker_shutdown.connect
def _stop_heartbeat(**_kwargs: Any) -> None:
    """A stopping worker (or pool child) stops renewing its lease."""
    stop_lease()
