"""Spider hooks beat asks for, run on the parse queue where the spiders live:
``crawlcluster.finished`` (on_finished) and ``crawlcluster.periodic`` (@every, re-seeding)."""

from __future__ import annotations

from crawlcluster import settings
from crawlcluster.app import app, database_outage_retry
from crawlcluster.db import get_engine
from crawlcluster.messages import HookMessage
from crawlcluster.stages import FINISHED, PERIODIC
from workers.hooks import run_on_finished, run_timer


@app.task(name=FINISHED.task, acks_late=True, ignore_result=True,
          **database_outage_retry(settings.current()))
def finished(message: HookMessage) -> bool:
    return run_on_finished(get_engine(), message["project"])


@app.task(name=PERIODIC.task, acks_late=True, ignore_result=True,
          **database_outage_retry(settings.current()))
def periodic(message: HookMessage) -> int:
    return run_timer(get_engine(), message["project"], message["timer"])
