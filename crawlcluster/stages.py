"""The pipeline's stages and hook tasks: each one's Celery task name and the queue it runs on.

This table is the one place that names them. ``celeryconfig.py`` derives its queues and
routes from it, every task is declared with its name, and every sender (the scheduler, the
fetch, render and parse tasks) publishes to it; a worker serves the stages named by ``-Q``.
What each message holds is :mod:`crawlcluster.messages`.

    scheduler -> fetch | render -> parse -> store
    (parse sends a ``render="auto"`` page that needs a browser back to render)

The spider hooks beat asks for (``on_finished``, ``@every`` timers) run on the parse queue,
where the spiders are installed. This module imports nothing, so ``celeryconfig.py`` and
the spider API can read it without building the Celery app.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Task:
    """One Celery task of the cluster: the name it is declared and sent by, and its queue."""

    task: str
    queue: str


FETCH = Task("crawlcluster.fetch", "fetch")  # httpx, many fetches in flight per process
RENDER = Task("crawlcluster.render", "render")  # headless Chromium; only render workers consume it
PARSE = Task("crawlcluster.parse", "parse")  # spider callbacks and their new links
STORE = Task("crawlcluster.store", "store")  # outcomes and items, one transaction per message
STAGES = (FETCH, RENDER, PARSE, STORE)

# spider hooks, on the parse queue where the spiders are installed
FINISHED = Task("crawlcluster.finished", PARSE.queue)  # a project's on_finished
PERIODIC = Task("crawlcluster.periodic", PARSE.queue)  # one @every timer of a project
HOOKS = (FINISHED, PERIODIC)

# every queue a worker may serve, in pipeline order (a worker without -Q serves them all)
QUEUES = tuple(stage.queue for stage in STAGES)


def task_routes() -> dict[str, dict[str, str]]:
    """Celery's ``task_routes``: each task of :data:`STAGES` and :data:`HOOKS` to its queue."""
    return {task.task: {"queue": task.queue} for task in STAGES + HOOKS}


# The trial engine behind `crawlcluster parse` / `shell`, the console's step debugger and
# crawlcluster.testing: data-plane code (the workers' fetcher, browser and callback runner) the
# control plane runs in-process. Named by string, as the Celery app names its task modules, so
# crawlcluster/ imports nothing of workers/ (DESIGN.md).
TRIAL_ENGINE = "workers.trial"


def trial_engine() -> Any:
    """The trial engine module (:mod:`workers.trial`), imported by name."""
    import importlib

    return importlib.import_module(TRIAL_ENGINE)
