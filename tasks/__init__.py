"""Thin Celery tasks, one module per stage: decode the message, call the engine in
``workers/``, hand the result to the next queue, record the outcome."""

from tasks import lease as _lease  # noqa: E402,F401 - connects the workers' lease signals
