r"""A project's life: the one module that writes ``projects.status``.

Every change of a project's state is a function here, and each is a single guarded
``UPDATE`` (its ``WHERE`` names the states it may leave), so two processes racing over one
project cannot both win and a transition that is not allowed changes nothing and returns
False::

                             create (submit of a new project)
                                           |
                                           v
       +---------------------------->  RUNNING  <-----------------------------------+
       |                            /     |     \                                    |
       |                     pause /      |      \ a run of failures                 |
       |                          v       |       v  (record_streak)                 |
       |          PAUSED by a user        |        PAUSED by failures                |
       |          (paused_until NULL)     |        (paused_until = t)                |
       |                 |                |               |   at t, housekeeping     |
       |   resume, submit, retry_failed   |               +--resumes it on trial --->+
       +-----------------+                |                                          |
       |                                  | nothing pending or queued (finish)       |
       |                                  v                                          |
       +--- resume, submit, ---------- FINISHED --- a timer's new rows (reopen) ---->+
            retry_failed

       cancel, from every state  -->  CANCELLED  --- resume, submit, retry_failed ---> RUNNING
       delete = cancel + delete_at: once delete_at has passed and the project is not
       running, housekeeping removes its rows, its results and then the project itself
       (DELETED: no row is left, so nothing moves it again; resume says it is not found).

Refused, and so without effect: pausing a project that is not running (paused, finished,
cancelled), auto-pausing one that is not running, finishing one that is not running or
that changed since the caller looked, housekeeping resuming a project a person paused,
a timer reopening a project that is not finished, deleting a running one, and anything on
a project that was deleted.

What happens to a project's *rows* on these transitions (cancel turns pending rows
cancelled, resume re-opens them) is :mod:`crawlcluster.database.tasks`'s part; callers pair
the two in one transaction. A deletion's last steps (:func:`delete_due_projects`) remove the
rows and results, then the project. Reading a project's row is here too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from crawlcluster.database.counts import project_rows
from crawlcluster.schema import (
    CANCELLED,
    FINISHED,
    PAUSED,
    PENDING,
    QUEUED,
    ROBOTS_CALLBACK,
    RUNNING,
    crawl_tasks,
    projects,
    render_pages_plain,
    results,
)

logger = logging.getLogger(__name__)

USER_PAUSE_REASON = "paused by the user"


def _now(now: float | None) -> float:
    return time.time() if now is None else now


def project_row(conn: Connection, name: str) -> dict[str, Any] | None:
    """The project's row as a dict, None when there is no such project."""
    row = conn.execute(select(projects).where(projects.c.name == name)).first()
    return dict(row._mapping) if row else None


def all_projects(conn: Connection) -> list[dict[str, Any]]:
    """Every project's row, by name."""
    return [dict(r._mapping) for r in conn.execute(select(projects).order_by(projects.c.name))]


def running_projects(conn: Connection) -> list[dict[str, Any]]:
    """The rows of the running projects, by name: those the dispatcher claims for."""
    rows = conn.execute(select(projects).where(projects.c.status == RUNNING).order_by(projects.c.name))
    return [dict(r._mapping) for r in rows]


def configure(conn: Connection, name: str, settings: Mapping[str, Any], columns: Mapping[str, Any],
              now: float | None = None) -> bool:
    """Replace the project's ``settings`` and change its limit ``columns`` (rate, burst,
    queue_limit), whatever its state; False when the project is gone."""
    now = _now(now)
    return conn.execute(_named(name).values(settings=dict(settings), updated_at=now, **columns)).rowcount == 1


def trust_start_hosts(conn: Connection, name: str, hosts: list[str], now: float | None = None) -> bool:
    """Add ``hosts`` (``host:port``) to the project's ``start_hosts``, the hosts the address
    guard trusts as given; True when any was new. The row is locked while its settings are
    read and written, so two timers adding hosts at once lose neither's."""
    row = conn.execute(select(projects.c.settings).where(projects.c.name == name).with_for_update()).first()
    if row is None:
        return False
    settings = dict(row.settings or {})
    known = list(settings.get("start_hosts") or ())
    new = [host for host in hosts if host not in known]
    if not new:
        return False
    settings["start_hosts"] = sorted([*known, *new])
    conn.execute(_named(name).values(settings=settings, updated_at=_now(now)))
    return True


def _named(name: str) -> Any:
    return update(projects).where(projects.c.name == name)


def create(conn: Connection, name: str, columns: Mapping[str, Any], now: float | None = None) -> None:
    """A new project, running. ``columns`` are its other columns (spider, settings, limits)."""
    now = _now(now)
    conn.execute(projects.insert().values(name=name, created_at=now, tasks_created=0, **columns,
                                          status=RUNNING, finished_at=None, updated_at=now))


def resubmit(conn: Connection, name: str, columns: Mapping[str, Any], now: float | None = None) -> bool:
    """A submit to a known project, in whatever state: it runs again with ``columns``
    changed. Its pause fields and failure run stay as they were; a planned deletion is
    dropped (new work means the project is wanted: left in place, housekeeping would remove
    the new crawl's results with the old ones once it finished)."""
    now = _now(now)
    result = conn.execute(_named(name).values(**columns, status=RUNNING, finished_at=None, delete_at=None,
                                              updated_at=now))
    return result.rowcount == 1


def pause(conn: Connection, name: str, now: float | None = None) -> bool:
    """A person pauses a running project: nothing more is dispatched until they resume it
    (housekeeping never resumes it, as paused_until stays NULL)."""
    now = _now(now)
    result = conn.execute(_named(name).where(projects.c.status == RUNNING).values(
        status=PAUSED, paused_until=None, pause_reason=USER_PAUSE_REASON, updated_at=now))
    return result.rowcount == 1


def pause_for(conn: Connection, name: str, reason: str, now: float | None = None) -> bool:
    """A running project stops for a reason a person must act on (its spider cannot be
    loaded on the workers): paused as by a user (housekeeping never resumes it), with
    ``reason`` as its pause_reason. True only for the call that paused it."""
    now = _now(now)
    result = conn.execute(_named(name).where(projects.c.status == RUNNING).values(
        status=PAUSED, paused_until=None, pause_reason=reason, updated_at=now))
    return result.rowcount == 1


def run_again(conn: Connection, name: str, now: float | None = None) -> bool:
    """Resume (or retry failed rows of) a project in any state: it runs, its failure run,
    pause and planned deletion are forgotten. False only when the project is gone."""
    now = _now(now)
    result = conn.execute(_named(name).values(
        status=RUNNING, finished_at=None, updated_at=now, consecutive_failures=0, paused_until=None,
        pause_reason=None, delete_at=None))
    return result.rowcount == 1


def finish(conn: Connection, name: str, seen_updated_at: float | None = None,
           now: float | None = None) -> bool:
    """Mark a running project finished; False if it was no longer running, or if it changed
    since the caller read it at ``seen_updated_at`` (a submit or resume that raced with
    the caller's "nothing open" check must not be marked finished)."""
    now = _now(now)
    stmt = _named(name).where(projects.c.status == RUNNING)
    if seen_updated_at is not None:
        stmt = stmt.where(projects.c.updated_at == seen_updated_at)
    result = conn.execute(stmt.values(status=FINISHED, finished_at=now, updated_at=now))
    return result.rowcount == 1


def reopen_finished(conn: Connection, name: str, now: float | None = None) -> bool:
    """A finished project whose timer added rows to fetch runs again; other states keep
    theirs (a paused or cancelled project's new rows wait)."""
    now = _now(now)
    result = conn.execute(_named(name).where(projects.c.status == FINISHED).values(
        status=RUNNING, finished_at=None, updated_at=now))
    return result.rowcount == 1


def cancel(conn: Connection, name: str, now: float | None = None) -> bool:
    """Stop a project for good, from any state (:func:`run_again` can still bring it back)."""
    now = _now(now)
    return conn.execute(_named(name).values(status=CANCELLED, updated_at=now)).rowcount == 1


def record_streak(conn: Connection, name: str, successes: int, failures: int, *, pause_after: int,
                  pause_seconds: float, last_error: str | None, now: float | None = None) -> bool:
    """Track a project's run of consecutive failures; pause it for ``pause_seconds`` when the
    run reaches ``pause_after`` (0 disables) while pages still wait for their first try
    (:func:`has_untried_pages`). Returns True when this call paused it."""
    now = _now(now)
    if successes:
        conn.execute(_named(name).where(projects.c.consecutive_failures != 0).values(consecutive_failures=0))
        return False
    if not failures:
        return False
    streak = conn.execute(
        _named(name).values(consecutive_failures=projects.c.consecutive_failures + failures)
        .returning(projects.c.consecutive_failures)
    ).scalar()
    if not pause_after or streak is None or streak < pause_after:
        return False
    if not has_untried_pages(conn, name):
        # the end of a crawl: what is left are pages that failed before (a site's few broken
        # pages, retried last). Pausing would protect the site from nothing but those retries
        # and hold the end of the crawl for auto_pause_seconds per trial; they end failed instead.
        logger.info("project %s: %d consecutive failures, but only pages that failed before are left: "
                    "not pausing", name, streak)
        return False
    result = conn.execute(
        _named(name).where(projects.c.status == RUNNING)
        .values(status=PAUSED, paused_until=now + pause_seconds, updated_at=now,
                pause_reason=f"{streak} consecutive failures (last: {last_error}); trying again at "
                             f"{time.strftime('%H:%M:%S', time.gmtime(now + pause_seconds))} UTC")
    )
    if result.rowcount:
        logger.warning("project %s paused after %d consecutive failures", name, streak)
    return result.rowcount == 1


def has_untried_pages(conn: Connection, name: str) -> bool:
    """Whether ``name`` still has pages waiting for their first try (pending or in flight and
    never failed): the work an auto-pause holds back while its site is in trouble. A run of
    failures with none of them left is a site's broken pages retried at the end of a crawl,
    not a site in trouble. Read through the due and stale indexes; only when a run of
    failures is long enough to pause."""
    untried = select(crawl_tasks.c.task_id).where(
        crawl_tasks.c.project == name, crawl_tasks.c.error.is_(None),
        crawl_tasks.c.callback != ROBOTS_CALLBACK)
    for state in (PENDING, QUEUED):
        if conn.execute(untried.where(crawl_tasks.c.status == state).limit(1)).first() is not None:
            return True
    return False


def resume_auto_paused(conn: Connection, now: float | None = None) -> list[str]:
    """Auto-paused projects whose pause is over go back to running, on trial (their failure
    run is kept until a success clears it). Returns their names."""
    now = _now(now)
    stmt = (update(projects).where(projects.c.status == PAUSED, projects.c.paused_until <= now)
            .values(status=RUNNING, paused_until=None, updated_at=now).returning(projects.c.name))
    return list(conn.execute(stmt).scalars())


def schedule_deletion(conn: Connection, name: str, when: float) -> bool:
    """Plan the removal of a (cancelled) project's rows, results and row at ``when``."""
    return conn.execute(_named(name).values(delete_at=when)).rowcount == 1


def due_for_deletion(conn: Connection, now: float | None = None) -> list[str]:
    """Projects not running whose planned deletion time has passed."""
    now = _now(now)
    return list(conn.execute(select(projects.c.name).where(projects.c.delete_at <= now,
                                                           projects.c.status != RUNNING)).scalars())


def remove(conn: Connection, name: str) -> None:
    """The last step of a deletion, once the project's rows and results are gone."""
    conn.execute(projects.delete().where(projects.c.name == name))


def delete_due_projects(conn: Connection, batch_rows: int, now: float | None = None) -> list[str]:
    """Remove rows and results of stopped projects past their delete_at, a bounded batch per
    call; a project whose rows are all gone is removed too. Returns the projects removed."""
    now = time.time() if now is None else now
    removed = []
    for name in due_for_deletion(conn, now):
        # results, then each half of the rows through its index (queued rows of a stopped
        # project are rows whose messages were lost)
        steps = [(results, (results.c.project == name,)),
                 (render_pages_plain, (render_pages_plain.c.project == name,))]
        steps += [(crawl_tasks, half) for half in project_rows(name)]
        for table, conditions in steps:
            chunk = select(table.c.task_id).where(*conditions).limit(batch_rows).scalar_subquery()
            conn.execute(table.delete().where(table.c.task_id.in_(chunk)))
        if not any(conn.execute(select(table.c.task_id).where(*conditions).limit(1)).first()
                   for table, conditions in steps):
            remove(conn, name)
            removed.append(name)
    return removed
