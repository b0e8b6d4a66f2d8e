"""The Python client API: watch a crawl, read its results, steer it (``submit`` starts one:
crawlcluster/submission.py).

Everything here talks to the database only (the scheduler does the rest), so it works
from any machine that reaches the cluster's Postgres:

    crawl = crawlcluster.submit(["http://127.0.0.1:8000/"], project="demo", max_pages=1000)
    crawl.wait(timeout=600, progress=True)
    for item in crawl.results(): ...
"""

from __future__ import annotations

import json
import logging
import time
from typing import IO, Any, Callable, Iterator

from crawlcluster import scheduling, stats
from crawlcluster.database import failures, render, tasks, timers
from crawlcluster.database import projects as lifecycle
from crawlcluster.database.results import stream_items
from crawlcluster.db import get_engine
from crawlcluster.dispatch import lease
from crawlcluster.errors import ConfigurationError, CrawlClusterError, ProjectNotFound
from crawlcluster.overview import project_stats
from crawlcluster.schema import CANCELLED, PAUSED

logger = logging.getLogger(__name__)

__all__ = ["Crawl", "CrawlTimeout", "list_projects", "render_stats", "scheduler_health"]

class CrawlTimeout(CrawlClusterError):
    """``Crawl.wait`` ran out of time with work still pending or queued."""


def list_projects(database_url: str | None = None) -> list[dict[str, Any]]:
    with get_engine(database_url).connect() as conn:
        return lifecycle.all_projects(conn)


def render_stats(database_url: str | None = None) -> list[dict[str, Any]]:
    """One dict per render worker process that rendered anything: pages rendered and
    failed, browsers launched, ``recycles`` (after render_recycle_pages pages or above
    render_max_pss_bytes), ``crashes`` and ``hung_kills`` (browsers killed and replaced),
    ``refused_requests`` (page subresources the address guard refused), and the current
    browser tree's PSS and summed RSS in bytes."""
    with get_engine(database_url).connect() as conn:
        return render.render_worker_rows(conn)


def scheduler_health(database_url: str | None = None) -> dict[str, Any]:
    """The dispatching scheduler as its lease row shows it: ``holder`` (host:pid of the
    leader), ``last_seen_at`` and ``seconds_since_seen`` (its last tick), ``alive``, and a
    ``message`` when it is not (``scheduler not seen for 60 s``, ``no scheduler has ever
    run``). The leader writes the row every couple of seconds while it ticks."""
    with get_engine(database_url).connect() as conn:
        return lease.scheduler_health(conn).as_dict()


class Crawl:
    """A handle on one project's crawl; cheap to create, holds no connection."""

    def __init__(self, project: str, *, database_url: str | None = None) -> None:
        self.project = project
        self.database_url = database_url

    def __repr__(self) -> str:
        return f"<Crawl {self.project!r}>"

    @property
    def engine(self):
        return get_engine(self.database_url)

    def _project(self, conn) -> dict[str, Any]:
        row = lifecycle.project_row(conn, self.project)
        if row is None:
            raise ProjectNotFound(self.project)
        return row

    def stats(self, figures: bool = True, waiting: bool = True) -> dict[str, Any]:
        """Rows per state, items stored and the project's status
        (``{"pending", "queued", "done", "failed", "cancelled", "disallowed", "items", "status"}``);
        the rows count the scheduler's robots.txt fetches (one per host) too, which is what
        :meth:`is_idle` goes by. ``pages`` has the same states for the crawl's pages alone
        (what ``status``, the progress bar and the summary show) and ``robots`` for the
        robots.txt rows alone.
        ``next_due_at`` (when the earliest pending row is due, unix time) and, with
        ``waiting``, ``waiting``: short sentences on what holds the crawl back (``3 retries
        due in 0:00:42``, ``scheduler not seen for 60 s``, ``paused: ...``, ``host X
        postponed: robots.txt unreachable, ...``, rows waiting for a render worker) and
        ``scheduler`` (:func:`scheduler_health`). With ``figures``, the durable statistics:
        outcome counts over the last 5 minutes, hour, day and all time (``windows``),
        ``pages_per_second`` now, an ``eta_seconds`` estimate (None while paused or
        cancelled; never before the last pending row is due), and the cost so far:
        ``bytes`` downloaded, ``fetch_seconds``, ``browser_seconds``, ``retries``, ``bounds``:
        what pages' bounds dropped or stopped (README: Bounded cost for any page), and what
        Scrapy prints at a crawl's end (:func:`crawlcluster.stats.end_of_crawl`): ``status_codes``,
        ``error_kinds``, ``items_scraped``, ``items_dropped``, ``dropped_reasons``,
        ``links_offsite``, ``links_duplicate``, ``elapsed_seconds``; and ``pages_rerendered``,
        ``rerender_skipped`` (render="auto" pages rendered again once their shape needed a browser)."""
        now = time.time()
        with self.engine.connect() as conn:
            row = self._project(conn)
            counts = project_stats(conn, [row], now, figures=figures, waiting=waiting)[self.project]
            if figures:
                counts.update(stats.end_of_crawl(conn, self.project, row["created_at"], row["finished_at"],
                                                 now))
                # render="auto": pages parsed plainly, then rendered and parsed again once their
                # shape was found to need a browser, and those left as parsed (past the bound)
                counts["pages_rerendered"], counts["rerender_skipped"] = render.rerender_totals(
                    conn, self.project)
        return counts

    def host_stats(self) -> list[dict[str, Any]]:
        """The crawl's cost per host (fetches, outcomes, retries, bytes, fetch and browser seconds,
        pages ``rendered`` and their ``rendered_share`` of the host's pages), most bytes first."""
        with self.engine.connect() as conn:
            self._project(conn)
            return stats.host_figures(conn, self.project)

    def failures(self, kind: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """The project's failed rows, oldest first: ``url``, ``kind`` (``HTTP 500``,
        ``timeout``, ``dns``, ``connect``, ``robots``, ``redirect``, ``callback``, ...),
        ``status_code``, ``error`` (a callback's exception with its file and line), ``callback``,
        ``depth``, ``task_id``. ``kind`` keeps one kind: an error kind, an HTTP status
        (``404``) or a class of them (``5xx``)."""
        with self.engine.connect() as conn:
            self._project(conn)
            return failures.failed_rows(conn, self.project, kind=kind, limit=limit)

    def failure_counts(self) -> dict[str, int]:
        """Failed rows per kind (``{"HTTP 500": 3, "dns": 1, "callback": 20}``), most first."""
        with self.engine.connect() as conn:
            self._project(conn)
            return failures.failure_counts(conn, self.project)

    def retry_failed(self, kind: str | None = None) -> int:
        """Fetch the failed rows again (only those of ``kind``, as :meth:`failures` takes
        it): they become pending, due now, with fresh retries, and the project runs again
        so the scheduler dispatches them. Returns how many rows were re-opened."""
        now = time.time()
        with self.engine.begin() as conn:
            self._project(conn)
            reopened = tasks.reopen_failed_rows(conn, self.project, scheduling.RetryRules.of_row, kind=kind,
                                                 now=now)
            if reopened:
                lifecycle.run_again(conn, self.project, now)
        logger.info("%s: %d failed rows due again", self.project, reopened)
        return reopened

    def is_idle(self, stats: dict[str, Any] | None = None) -> bool:
        stats = stats or self.stats(figures=False, waiting=False)
        return stats["pending"] == 0 and stats["queued"] == 0

    def wait(self, timeout: float | None = None, progress: bool = False,
             poll_seconds: float = 0.5) -> dict[str, Any]:
        """Block until nothing is pending or queued (or the project is cancelled or paused by
        the user, with nothing queued); return the final :meth:`stats` (its ``pages`` count the
        crawl's pages, robots.txt rows apart). With ``progress`` a bar on
        the terminal shows pages done out of pages known, and what the crawl waits for when
        nothing is in flight. Raises :class:`CrawlTimeout`, whose message says what is left
        and why."""
        from crawlcluster.progress import CrawlProgress

        deadline = None if timeout is None else time.monotonic() + timeout
        with CrawlProgress(self.project, enabled=progress) as bar:
            while True:
                stats = self.stats(figures=False)
                bar.update(stats)
                # a user's pause or cancel ends the wait; an auto-pause does not (it resumes itself)
                stopped = stats["status"] == CANCELLED or (stats["status"] == PAUSED
                                                           and not stats["paused_until"])
                if self.is_idle(stats) or (stopped and stats["queued"] == 0):
                    return self.stats()
                if deadline is not None and time.monotonic() > deadline:
                    why = stats["waiting"] or [
                        "is `celery -A crawlcluster beat` running, and a worker per queue?"]
                    raise CrawlTimeout(
                        f"project {self.project!r} still has {stats['pending']} pending and "
                        f"{stats['queued']} queued "
                        f"rows after {timeout}s: " + "; ".join(why))
                time.sleep(poll_seconds)

    def results(self, batch_size: int = 1000) -> Iterator[dict[str, Any]]:
        """Every stored item, streamed with a server-side cursor (constant memory)."""
        with self.engine.connect() as conn:
            yield from stream_items(conn, self.project, batch_size)

    def export(self, out: IO[str], fmt: str = "jsonl", progress: Callable[[int], None] | None = None, *,
               keep_formulas: bool = False) -> int:
        """Write every item to the open stream ``out`` as ``jsonl`` (JSON lines), ``json``
        (one JSON array) or ``csv``; return how many were written. The formats are those of
        ``crawl -o`` (:mod:`crawlcluster.feeds`). CSV columns are the union of the items'
        keys, in first-seen order (found in a first streaming pass, so memory stays
        constant); nested values are written as JSON. A CSV cell that begins with ``=``,
        ``+``, ``-``, ``@``, a tab or a carriage return gets a leading ``'`` so that a
        spreadsheet shows crawled text instead of running it as a formula;
        ``keep_formulas=True`` writes such cells verbatim. ``progress(n)`` hears of each chunk."""
        from crawlcluster.feeds import stream_feed, write_all

        return write_all(stream_feed(out, fmt, keep_formulas=keep_formulas), self.results, progress)

    def screenshots(self) -> Iterator[dict[str, Any]]:
        """Every stored screenshot (render option ``screenshot=True``), one at a time:
        ``{"task_id", "url", "png"}`` with the PNG's bytes."""
        with self.engine.connect() as conn:
            yield from render.stream_screenshots(conn, self.project)

    def export_screenshots(self, directory: str) -> int:
        """Write each screenshot to ``directory/<task id>.png`` and an ``index.jsonl`` of
        ``{"url", "file"}`` lines; return how many were written."""
        from pathlib import Path

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        count = 0
        with open(out / "index.jsonl", "w") as index:
            for shot in self.screenshots():
                name = f"{shot['task_id']}.png"
                (out / name).write_bytes(shot["png"])
                index.write(json.dumps({"url": shot["url"], "file": name}) + "\n")
                count += 1
        return count

    def render_hosts(self, detail: bool = False) -> list[Any]:
        """Hosts that ``render="auto"`` found to need a browser in this project. With
        ``detail=True``, what it learned: one dict per host, callback and URL shape with its
        ``decision`` (``render``, ``plain`` or ``learning``), the ``samples`` compared both
        ways, how many ``agreed`` and how many were ``mismatches``, the ``reason``, and the
        pages parsed plainly before it needed a browser that were ``rerendered`` (or
        ``rerender_skipped``, past ``render_auto_rerender_max``)."""
        with self.engine.connect() as conn:
            if detail:
                return render.render_host_rows(conn, self.project)
            return sorted(render.remembered_render_hosts(conn, self.project))

    def configure(self, **values: Any) -> dict[str, Any]:
        """Change project settings while the crawl runs (the scheduler and workers pick
        them up within seconds): rate, burst, queue_limit, per_host_concurrency,
        per_host_delay, obey_robots, priority, retries, retry_delays, retry_policy
        (``quick`` or ``recurring``), age, auto_recrawl, user_agent, default_headers,
        download_timeout (for rows added after the change), allow_private (hosts, host:port,
        addresses or networks the address guard lets discovered URLs reach). The retry settings win over the
        spider's own (as Scrapy's command line wins over ``custom_settings``) and apply to
        rows added after the change. Returns the project's settings after the change."""
        checked = scheduling.check_project_settings(values)
        columns = {k: checked.pop(k) for k in scheduling.PROJECT_COLUMNS if k in checked}
        with self.engine.begin() as conn:
            row = self._project(conn)
            merged = {**(row["settings"] or {}), **checked}
            lifecycle.configure(conn, self.project, merged, columns)
        return {**merged, **{k: columns.get(k, row[k]) for k in scheduling.PROJECT_COLUMNS}}

    def set_rate(self, rate: float, burst: float | None = None) -> None:
        """Dispatch at most ``rate`` URLs per second on average, ``burst`` at once (a
        token bucket, as pyspider had); 0 removes the limit."""
        self.configure(rate=rate, **({"burst": burst} if burst is not None else {}))

    def pause(self) -> None:
        """Stop dispatching this project's rows; rows already queued still finish. A project
        that is not running (paused, finished, cancelled) stays as it is."""
        with self.engine.begin() as conn:
            self._project(conn)
            lifecycle.pause(conn, self.project)

    def resume(self) -> int:
        """Dispatch again after :meth:`pause`, an auto-pause or :meth:`cancel` (a finished
        project with new rows runs too); forgets the failure run that caused an auto-pause.
        Rows that :meth:`cancel` stopped become pending again; returns how many (rows a
        request's ``cancel=True`` cancelled stay cancelled)."""
        now = time.time()
        with self.engine.begin() as conn:
            self._project(conn)
            reopened = tasks.reopen_cancelled(conn, self.project, now=now)
            lifecycle.run_again(conn, self.project, now)
        return reopened

    def schedule(self, every_seconds: float) -> None:
        """Re-seed the start URLs every ``every_seconds`` (from beat); a start URL is fetched
        again only once its age (by default the interval) has passed."""
        if every_seconds <= 0:
            raise ConfigurationError(
                f"schedule interval of {self.project} must be positive, got {every_seconds}")
        with self.engine.begin() as conn:
            self._project(conn)
            timers.set_timer(conn, self.project, "__reseed__", every_seconds)

    def delete(self, after_seconds: float | None = None) -> float:
        """Cancel the crawl and remove its rows and results after ``after_seconds`` (default
        CRAWLCLUSTER_DELETE_AFTER_SECONDS, a day), giving time to change one's mind with
        :meth:`resume`. Returns when (unix time) the data goes."""
        from crawlcluster import settings as cluster_settings

        delay = cluster_settings.current().delete_after_seconds if after_seconds is None else after_seconds
        when = time.time() + delay
        self.cancel()
        with self.engine.begin() as conn:
            lifecycle.schedule_deletion(conn, self.project, when)
        return when

    def cancel(self) -> None:
        """Stop the crawl for good: pending rows become ``cancelled``."""
        with self.engine.begin() as conn:
            self._project(conn)
            lifecycle.cancel(conn, self.project)
            tasks.cancel_pending(conn, self.project)
