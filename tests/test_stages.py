"""The stages table is the one list of tasks and queues: Celery's configuration and the
declared tasks follow from it."""

from __future__ import annotations

import importlib

import celeryconfig
from crawlcluster import stages
from crawlcluster.app import TASK_MODULES, app


def test_the_four_stages_run_in_pipeline_order_on_queues_of_their_names() -> None:
    assert stages.QUEUES == ("fetch", "render", "parse", "store")
    assert [stage.task for stage in stages.STAGES] == [
        "crawlcluster.fetch", "crawlcluster.render", "crawlcluster.parse", "crawlcluster.store"]


def test_celeryconfig_routes_every_stage_to_its_queue_and_the_hooks_to_parse() -> None:
    assert [queue.name for queue in celeryconfig.task_queues] == list(stages.QUEUES)
    assert celeryconfig.task_routes == {
        "crawlcluster.fetch": {"queue": "fetch"},
        "crawlcluster.render": {"queue": "render"},
        "crawlcluster.parse": {"queue": "parse"},
        "crawlcluster.store": {"queue": "store"},
        "crawlcluster.finished": {"queue": "parse"},
        "crawlcluster.periodic": {"queue": "parse"},
    }


def test_every_declared_task_is_in_the_table_and_every_entry_is_declared() -> None:
    for module in TASK_MODULES:
        importlib.import_module(module)
    declared = {name for name in app.tasks if name.startswith("crawlcluster.")}
    assert declared == {task.task for task in stages.STAGES + stages.HOOKS}


def test_a_route_resolves_to_the_queue_the_table_names() -> None:
    for task in stages.STAGES + stages.HOOKS:
        assert app.amqp.router.route({}, task.task)["queue"].name == task.queue
