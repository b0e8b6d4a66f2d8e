"""Durable crawl statistics: what each batch cost, recorded by the store stage, read by
``Crawl.stats()``, ``crawlcluster status --watch`` and the Prometheus exporter.

Counts live in Postgres (``crawl_stats``, one row per project, host and minute), not in
Flower's memory, so they survive restarts. Every page message carries its own cost
(``wire_bytes``, ``fetch_seconds``, ``browser_seconds``); the store stage adds a batch's
costs in one upsert (:func:`crawlcluster.database.stats.record_batch`). The queries are
:mod:`crawlcluster.database.stats`'s; this module turns their answers into figures and
sentences.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy.engine import Connection

from crawlcluster.database import failures, hosts, render, tallies
from crawlcluster.database import overview as overview_rows
from crawlcluster.database import stats as stat_rows
from crawlcluster.schema import BOUND_COLUMNS, CANCELLED, PAUSED, RUNNING

WINDOWS = {"5m": 300, "1h": 3600, "1d": 86400}
# rows queued for the browser tier this long, with no render worker reporting since, are
# said to wait for one (a render worker writes its render_workers row after every batch)
RENDER_SILENCE_SECONDS = 15.0
# queued rows read, at most, to tell the ones sent to the render queue from the rest
RENDER_SAMPLE_ROWS = 500
# postponed hosts named, at most, in the waiting sentences
NAMED_HOSTS = 3
# rows not due yet read, at most, to count retries waiting (more are shown as "1,000+")
PENDING_SAMPLE_ROWS = 1000
# due rows read, at most, to find the hosts the scheduler holds back: it skips their rows,
# so they stay at the front of the due order
POSTPONED_SAMPLE_ROWS = 1000


def window_starts(now: float) -> dict[str, float]:
    """The earliest minute each window counts (``60s``: the pace now)."""
    return {**{name: now - seconds for name, seconds in WINDOWS.items()}, "60s": now - 60}


def project_figures(conn: Connection, project: str, open_rows: int,
                    now: float | None = None) -> dict[str, Any]:
    """Windows (5 minutes, an hour, a day, all time), pages/s now, cost totals and an ETA.

    ``open_rows`` (pending + queued now) and the last five minutes' pace give the ETA; it is
    an estimate that moves while the frontier still grows. Read as the dashboard reads every
    project's (:func:`crawlcluster.overview.project_stats`)."""
    now = time.time() if now is None else now
    windows = overview_rows.window_sums(conn, [project], window_starts(now)).get(project)
    return figures_of(windows, overview_rows.all_time_sums(conn, [project]).get(project), open_rows, now)


def figures_of(windows: dict[str, Any] | None, total: Any, open_rows: int, now: float) -> dict[str, Any]:
    """:func:`project_figures` from a project's window sums and all-time sums (None: no
    figures yet), as :mod:`crawlcluster.database.overview` reads them."""
    empty = {name: 0 for name in ("done", "failed", "retried")}
    windows = windows or {}
    shown = {name: {key: int(value) for key, value in (windows.get(name) or empty).items()}
             for name in WINDOWS}
    totals = {name: (getattr(total, name) if total is not None else 0) or 0 for name in stat_rows.COUNTERS}
    shown["all"] = {"done": int(totals["done"]), "failed": int(totals["failed"]),
                    "retried": int(totals["retried"])}
    recent = windows.get("60s") or empty
    first_minute = windows.get("first_minute_5m")
    span = max(1.0, now - first_minute) if first_minute is not None else 300.0
    five = shown["5m"]
    pace = (five["done"] + five["failed"]) / min(float(span), 300.0)
    return {
        "windows": shown,
        "pages_per_second": round(float(recent["done"] + recent["failed"]) / 60.0, 3),
        "pages_per_second_5m": round(pace, 3),
        "eta_seconds": (round(open_rows / pace, 1) if pace > 0 and open_rows
                        else (0.0 if not open_rows else None)),
        "bytes": int(totals["bytes"]),
        "fetch_seconds": round(float(totals["fetch_seconds"]), 3),
        "browser_seconds": round(float(totals["browser_seconds"]), 3),
        "pages_rendered": int(totals["rendered"]),  # by the browser tier (render=True or "auto")
        "retries": int(totals["retried"]),
        "fetches": int(totals["fetched"]),
        # what pages' bounds dropped or stopped (README: Bounded cost for any page)
        "bounds": {name: int(totals[name]) for name in BOUND_COLUMNS},
    }


def end_of_crawl(conn: Connection, project: str, created_at: float, finished_at: float | None,
                 now: float) -> dict[str, Any]:
    """The figures Scrapy prints when a crawl closes, under our names: ``status_codes``
    (responses by HTTP status, each fetch counted, retried ones and robots.txt too, as
    Scrapy's ``downloader/response_status_count``), ``error_kinds`` (failed pages by kind,
    from the rows), ``items_scraped`` (items stored, each time a page was stored),
    ``items_dropped`` and ``dropped_reasons`` (by the item pipelines' DropItem message),
    ``links_offsite`` and ``links_duplicate`` (links not followed: Scrapy's ``offsite/filtered``
    and ``dupefilter/filtered``) and ``elapsed_seconds`` since the project was created (to
    when it finished, or now)."""
    counts = tallies.project_tallies(conn, project)
    dropped = counts.get(tallies.DROPPED, {})
    links = counts.get(tallies.LINKS, {})
    return {
        "status_codes": dict(sorted(counts.get(tallies.STATUS, {}).items())),
        "error_kinds": failures.failure_counts(conn, project),
        "items_scraped": counts.get(tallies.ITEMS, {}).get("scraped", 0),
        "items_dropped": sum(dropped.values()),
        "dropped_reasons": dict(sorted(dropped.items(), key=lambda kv: (-kv[1], kv[0]))),
        "links_offsite": links.get("offsite", 0),
        "links_duplicate": links.get("duplicate", 0),
        "elapsed_seconds": round(max(0.0, (finished_at or now) - created_at), 3),
    }


def host_figures(conn: Connection, project: str) -> list[dict[str, Any]]:
    """All-time cost per host of a project, most bytes first, with the host's robots note
    (a Crawl-delay capped, a robots.txt cut) where it has one."""
    rows = stat_rows.sums(conn, project, by_host=True)
    figures = [{"host": r.host, "fetches": int(r.fetched), "done": int(r.done), "failed": int(r.failed),
                "retries": int(r.retried), "bytes": int(r.bytes),
                "fetch_seconds": round(float(r.fetch_seconds), 3),
                "browser_seconds": round(float(r.browser_seconds), 3), "rendered": int(r.rendered),
                # the share of the host's pages that cost a browser (render="auto" learns it)
                "rendered_share": round(int(r.rendered) / max(1, int(r.done) + int(r.failed)), 3)}
               for r in rows]
    notes = hosts.robots_notes(conn, [f["host"] for f in figures])
    for figure in figures:
        if figure["host"] in notes:
            figure["robots_note"] = notes[figure["host"]]
    return sorted(figures, key=lambda f: -f["bytes"])


def clock(seconds: float) -> str:
    """``0:00:42``, ``1:00:00``: a wait as the progress bar and ``status`` show it."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def duration(seconds: float | None) -> str:
    """A duration in a few characters, as ``status`` shows an ETA or an age: ``42 s``,
    ``12 min``, ``3 h``; ``?`` when unknown. The one formatter besides :func:`clock`."""
    if seconds is None:
        return "?"
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 2 * 3600:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


def pending_figures(conn: Connection, project: str, now: float, pending: int | None = None) -> dict[str, Any]:
    """When ``project``'s pending rows are due, read from the two ends of
    ix_crawl_tasks_pending_due (never by aggregating every pending row): ``next_due_at`` and
    ``last_due_at`` (earliest and latest next_run_at), and of the first PENDING_SAMPLE_ROWS
    rows not due yet the retries (a failure's back-off: they carry its error) and the others
    (exetime, re-crawl age), each with its earliest due time; ``later_capped`` when there
    were more (the counts are then lower bounds). ``due_now`` is ``pending`` (the caller's
    count) less the rows not due yet."""
    due = overview_rows.pending_due(conn, [project], now, PENDING_SAMPLE_ROWS)[project]
    return due_figures(due, now, pending)


def due_figures(due: tuple[Any, Any, int, Any, int, Any], now: float, pending: int | None) -> dict[str, Any]:
    """:func:`pending_figures` from what :func:`crawlcluster.database.overview.pending_due` read."""
    first, last, retries, next_retry, others, next_other = due
    capped = retries + others >= PENDING_SAMPLE_ROWS
    if pending is None:
        due_now = 1 if first is not None and first <= now else 0
    else:
        due_now = (max(0, pending - retries - others) if not capped
                   else int(first is not None and first <= now))
    return {"next_due_at": first, "last_due_at": last, "due_now": due_now,
            "retries_waiting": retries, "next_retry_at": next_retry,
            "later_waiting": others, "next_later_at": next_other, "later_capped": capped}


def eta_seconds(status: str, open_rows: int, queued: int, pace_eta: float | None, due: dict[str, Any],
                now: float) -> float | None:
    """The ETA a user can trust: none for a paused or cancelled project; never before the
    last pending row is due (a retry due in an hour keeps the crawl open that hour)."""
    if status in (PAUSED, CANCELLED):
        return None
    if not open_rows:
        return 0.0
    until_due = max(0.0, (due.get("last_due_at") or now) - now)
    if pace_eta is None:
        # no recent pace: only rows that are not due yet give a lower bound
        return round(until_due, 1) if until_due > 0 and not queued and not due.get("due_now") else None
    return round(max(pace_eta, until_due), 1)


def _plural(count: int, one: str, many: str) -> str:
    return f"{count:,} {one if count == 1 else many}"


def postponed_sentences(rows: list[tuple[str, str, float]], now: float) -> list[str]:
    """Sentences on the hosts the scheduler holds back (robots.txt), from at most
    NAMED_HOSTS + 1 of them (:func:`crawlcluster.database.overview.postponed_hosts`: among
    the hosts of a project's first POSTPONED_SAMPLE_ROWS due rows, since the claim skips a
    postponed host's rows, so they stay at the front of the due order)."""
    sentences = []
    for host, robots_status, blocked_until in rows[:NAMED_HOSTS]:
        why = "robots.txt unreachable" if robots_status == "error" else f"robots.txt {robots_status}"
        sentences.append(f"host {host} postponed: {why}, next try in {clock(blocked_until - now)}")
    if len(rows) > NAMED_HOSTS:
        sentences.append("more hosts postponed")
    return sentences


def _render_wait(conn: Connection, project: str, now: float,
                 rows: list[tuple[Any, str, float]]) -> str | None:
    """A sentence when rows sent to the render queue wait and no render worker has reported
    since the oldest of them was sent; None otherwise. ``rows``: at most RENDER_SAMPLE_ROWS
    queued rows (a project has at most its queue limit of them), :func:`queued_sample`."""
    modes = [((fetch or {}).get("render"), host, queued_at) for fetch, host, queued_at in rows]
    if not any(mode for mode, _, _ in modes):
        return None
    auto_hosts: set[str] = set()
    if any(mode == "auto" for mode, _, _ in modes):
        auto_hosts = render.remembered_render_hosts(conn, project)
    waiting = [queued_at for mode, host, queued_at in modes
               if mode is True or (mode == "auto" and host in auto_hosts)]
    if not waiting:
        return None
    last_report = render.last_render_report(conn)
    count = f"{len(waiting):,}{'+' if len(rows) >= RENDER_SAMPLE_ROWS else ''}"
    rows_text = f"{count} {'row waits' if count == '1' else 'rows wait'} for the render queue"
    if last_report is None:
        return f"{rows_text}: no render worker seen (start `celery -A crawlcluster worker -Q render`)"
    if last_report < min(waiting):
        return f"{rows_text}: no render worker seen for {clock(now - last_report)}"
    return None


def queued_sample(conn: Connection, names: list[str], now: float) -> dict[str, list[tuple[Any, str, float]]]:
    """The queued rows :func:`waiting_reasons` looks at for a render worker, per project."""
    return overview_rows.queued_unfetched(conn, names, now - RENDER_SILENCE_SECONDS, RENDER_SAMPLE_ROWS)


def postponed_sample(conn: Connection, names: list[str],
                     now: float) -> dict[str, list[tuple[str, str, float]]]:
    """The postponed hosts :func:`waiting_reasons` names, per project."""
    return overview_rows.postponed_hosts(conn, names, now, POSTPONED_SAMPLE_ROWS, NAMED_HOSTS + 1)


def waiting_reasons(conn: Connection, project: dict[str, Any], counts: dict[str, Any], due: dict[str, Any],
                    scheduler_message: str | None, now: float,
                    postponed: list[tuple[str, str, float]] | None = None,
                    queued: list[tuple[Any, str, float]] | None = None) -> list[str]:
    """Short sentences on why ``project`` (its projects row) is not done yet, most pressing
    first: a pause, a cancel, a silent scheduler, retries and rows due later, postponed
    hosts, rows waiting for a render worker. Empty when nothing is held back."""
    reasons: list[str] = []
    status, name = project["status"], project["name"]
    if status == PAUSED:
        reason = project.get("pause_reason") or "paused"
        reasons.append(reason if reason.startswith("paused") else f"paused: {reason}")
    elif status == CANCELLED and counts.get("cancelled"):
        reasons.append(f"cancelled: {_plural(counts['cancelled'], 'row', 'rows')} cancelled "
                       f"(`crawlcluster resume {name}` fetches those cancelled by the user)")
    if not counts["pending"] and not counts["queued"]:
        return reasons
    if status == RUNNING and scheduler_message:
        reasons.append(scheduler_message)
    more = "+" if due.get("later_capped") else ""
    if due.get("retries_waiting"):
        reasons.append(f"{due['retries_waiting']:,}{more} "
                       f"{'retry' if due['retries_waiting'] == 1 else 'retries'} "
                       f"due in {clock(due['next_retry_at'] - now)}")
    if due.get("later_waiting"):
        reasons.append(f"{due['later_waiting']:,}{more} "
                       f"{'row' if due['later_waiting'] == 1 else 'rows'} due in "
                       f"{clock(due['next_later_at'] - now)}")
    if counts["pending"]:
        if postponed is None:
            postponed = postponed_sample(conn, [name], now)[name]
        reasons.extend(postponed_sentences(postponed, now))
    if counts["queued"]:
        if queued is None:
            queued = queued_sample(conn, [name], now)[name]
        render = _render_wait(conn, name, now, queued)
        if render:
            reasons.append(render)
    return reasons
