"""The parse stage's item pipelines: each spider's pipeline instances in this worker process,
opened once, run on every page's items after its callback, closed when the process ends.

``workers/parser.py`` calls :func:`run_pipelines` with a page's items; what the pipelines
return is what the store stage stores. Instances live per project (and its generation: a
deleted and re-created project opens new ones) per worker process, as Scrapy's live per
crawl: ``open_spider`` runs before the first item this process sees, ``close_spider`` when
the process shuts down (Celery's worker_process_shutdown / worker_shutdown, the end of an
embedded crawl). Calls into one project's pipelines are serialised, so a pipeline written
for Scrapy's single thread is safe under a threads pool. A coroutine (``async def
process_item``, ``open_spider`` or ``close_spider``) is awaited on an event loop of this
process's own, kept for its life, so a client a pipeline opens in ``open_spider`` stays
usable in ``process_item``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import threading
import traceback
from collections import Counter
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Any, Mapping

from crawlcluster import settings
from crawlcluster.pipelines import PipelineCrawler, PipelineSettings, is_drop, pipeline_classes
from workers.loopthread import start_loop_thread

logger = logging.getLogger(__name__)

PIPELINE_KIND = "pipeline"  # a failed row's error kind when a pipeline raised
MAX_REASON_LENGTH = 200  # a drop reason longer than this is cut where it is counted


class PipelineFailed(Exception):
    """A pipeline raised (or returned nothing): ``error`` is the row's sentence."""

    def __init__(self, error: str, exc: BaseException | None) -> None:
        super().__init__(error)
        self.error = error
        self.exception = exc


@dataclass
class PipelineOutcome:
    """What a page's items became: those kept (possibly changed), drops by reason, or an error."""

    items: list[Any] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)
    error: str | None = None
    exception: BaseException | None = field(default=None, repr=False)
    where: str = ""  # the pipeline method that failed, for the worker's log


_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def _await(value: Any) -> Any:
    """``value``, or what it resolves to when it is awaitable, run on this process's loop and
    bounded by the parse time limit."""
    if not inspect.isawaitable(value):
        return value
    global _loop
    with _loop_lock:
        if _loop is None:
            _loop, _thread = start_loop_thread("crawlcluster-pipelines")
        loop = _loop

    async def wait() -> Any:
        return await value

    future = asyncio.run_coroutine_threadsafe(wait(), loop)
    limit = settings.current().parse_time_limit_seconds
    try:
        return future.result(timeout=limit)
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise TimeoutError(f"not done within the parse time limit (parse_time_limit_seconds={limit:g})") \
            from None
    except BaseException:
        future.cancel()  # the parse time limit (raised into this thread) leaves nothing running
        raise


def _failure(pipeline: Any, method: str, exc: BaseException) -> PipelineFailed:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    name = pipeline.__name__ if isinstance(pipeline, type) else type(pipeline).__name__
    return PipelineFailed(f"pipeline {name}.{method} raised {type(exc).__name__}: {exc}{where}", exc)


def _as_item(value: Any) -> Any:
    """A pipeline's answer as the store stage takes it: a dict where it can be one."""
    if isinstance(value, dict):
        return value
    if isinstance(value, Mapping):
        return dict(value)
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    dump = getattr(value, "model_dump", None)  # pydantic
    return dump() if callable(dump) else value


class PipelineChain:
    """One project's pipeline instances in this process, in order."""

    def __init__(self, spider_cls: type, instances: list[Any]) -> None:
        self.spider_cls = spider_cls
        self.instances = instances
        self.lock = threading.Lock()

    @classmethod
    def open(cls, spider: Any, project_settings: Mapping[str, Any] | None) -> PipelineChain:
        """Build each pipeline the way Scrapy does (``from_crawler(crawler)``, else
        ``from_settings(settings)``, else no arguments) and call its ``open_spider``. When one
        fails, those already opened are closed again and :class:`PipelineFailed` says which."""
        custom = getattr(type(spider), "custom_settings", None) or {}
        own = {k: v for k, v in (project_settings or {}).items() if k != "spider_kwargs"}
        crawler = PipelineCrawler(PipelineSettings({**custom, **own}), spider)
        chain = cls(type(spider), [])
        for pipeline_cls in pipeline_classes(type(spider)):
            factory: Any = pipeline_cls
            try:
                if callable(getattr(pipeline_cls, "from_crawler", None)):
                    instance = _await(factory.from_crawler(crawler))
                elif callable(getattr(pipeline_cls, "from_settings", None)):
                    instance = _await(factory.from_settings(crawler.settings))
                else:
                    instance = pipeline_cls()
            except Exception as exc:  # noqa: BLE001 - a pipeline bug fails the pages, not the worker
                chain.close(spider)
                raise _failure(pipeline_cls, "__init__", exc) from exc
            chain.instances.append(instance)
            if callable(getattr(instance, "open_spider", None)):
                try:
                    _await(instance.open_spider(spider))
                except Exception as exc:  # noqa: BLE001
                    chain.instances.pop()
                    chain.close(spider)
                    raise _failure(instance, "open_spider", exc) from exc
        return chain

    def process(self, items: list[Any], spider: Any) -> PipelineOutcome:
        """Pass each item through every pipeline in order. A ``DropItem`` drops that item
        (counted by its message); any other exception, or a ``process_item`` that returns
        None, fails the page and drops its items, as a callback's exception does."""
        outcome = PipelineOutcome()
        with self.lock:
            for item in items:
                for instance in self.instances:
                    process_item = getattr(instance, "process_item", None)
                    if not callable(process_item):
                        continue
                    try:
                        item = _await(process_item(item, spider))
                    except Exception as exc:  # noqa: BLE001 - DropItem, or a pipeline bug
                        if is_drop(exc):
                            reason = str(exc).strip() or type(exc).__name__
                            outcome.dropped[reason[:MAX_REASON_LENGTH]] += 1
                            break
                        failed = _failure(instance, "process_item", exc)
                        return PipelineOutcome(error=failed.error, exception=exc,
                                               where=f"{type(instance).__name__}.process_item")
                    if item is None:
                        name = type(instance).__name__
                        return PipelineOutcome(
                            error=f"pipeline {name}.process_item returned None; return the item "
                                  "(changed or not) or raise DropItem", where=f"{name}.process_item")
                else:
                    outcome.items.append(_as_item(item))
        return outcome

    def close(self, spider: Any) -> None:
        """Call every ``close_spider``, last opened first; an exception is logged, and the
        others still close."""
        with self.lock:
            instances, self.instances = self.instances, []
        for instance in reversed(instances):
            if callable(getattr(instance, "close_spider", None)):
                try:
                    _await(instance.close_spider(spider))
                except Exception:  # noqa: BLE001 - a closing pipeline must not stop the others
                    logger.warning("pipeline %s.close_spider raised", type(instance).__name__, exc_info=True)


# per (project, generation): the chain and the spider it was opened with
_chains: dict[str, tuple[Any, PipelineChain, Any]] = {}
_chains_lock = threading.Lock()
_no_pipelines: dict[type, bool] = {}


def run_pipelines(project: str, generation: Any, spider: Any, project_settings: Mapping[str, Any] | None,
                  items: list[Any]) -> PipelineOutcome:
    """``items`` through ``project``'s pipelines in this process, opened on first use. A spider
    without pipelines costs one dict lookup. A failed opening fails this page (kind
    ``pipeline``) and is tried again with the next one."""
    spider_cls = type(spider)
    if _no_pipelines.get(spider_cls) or not items:
        return PipelineOutcome(items=list(items))
    with _chains_lock:
        held = _chains.get(project)
        if held is not None and (held[0] != generation or held[1].spider_cls is not spider_cls):
            # the project was re-created, or its spider changed: the old instances close first
            _chains.pop(project)
            held[1].close(held[2])
            held = None
        if held is None:
            # a ConfigurationError (a path not allowed or not importable) goes to the caller
            if not pipeline_classes(spider_cls):
                _no_pipelines[spider_cls] = True
                return PipelineOutcome(items=list(items))
            try:
                chain = PipelineChain.open(spider, project_settings)
            except PipelineFailed as failed:
                return PipelineOutcome(error=failed.error, exception=failed.exception, where="open_spider")
            held = (generation, chain, spider)
            _chains[project] = held
    return held[1].process(items, spider)


def close_pipelines() -> int:
    """Close every project's pipelines in this process (its shutdown); return how many."""
    with _chains_lock:
        held = list(_chains.values())
        _chains.clear()
        _no_pipelines.clear()
    for _generation, chain, spider in held:
        chain.close(spider)
    return len(held)
