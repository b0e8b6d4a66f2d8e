"""What `crawlcluster status` draws: per-project rows per state, outcome windows, pace, ETA
and cost, as rich renderables (once, or live with --watch)."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Group
from rich.table import Table

from crawlcluster.stats import duration


def human_bytes(value: float) -> str:
    """``1,234 B``, ``12.1 KiB``, ``3.4 MiB``: a size as the status table and the console show it."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return str(value)


def _count(value: int) -> str:
    """A row count in at most five characters: 9,999, 12.3k, 123k, 1.2M."""
    if value < 10_000:
        return f"{value:,}"
    for unit, size in (("k", 1e3), ("M", 1e6), ("G", 1e9)):
        scaled = value / size
        if round(scaled, 1) < 100:
            return f"{scaled:.1f}{unit}"
        if round(scaled) < 1000:
            return f"{scaled:.0f}{unit}"
    return f"{value / 1e12:.0f}T"


def _pace(pages_per_second: float) -> str:
    return f"{pages_per_second:.1f}" if pages_per_second < 100 else f"{pages_per_second:,.0f}"


def _scheduler_line(scheduler: dict[str, Any]) -> str:
    return (f"scheduler {scheduler.get('holder')}: "
            f"last tick {scheduler.get('seconds_since_seen') or 0:.0f} s ago")


def shown_status(stats: dict[str, Any]) -> str:
    """The project's status, with the scheduler's liveness: a running project whose
    scheduler is silent is ``stalled`` (nothing dispatches it)."""
    status = str(stats["status"])
    scheduler = stats.get("scheduler") or {}
    if status == "running" and scheduler and not scheduler.get("alive", True):
        return "stalled"
    return status


def shown_eta(stats: dict[str, Any]) -> str:
    """``-`` for a paused, cancelled or finished project and when nothing is open."""
    if (stats["status"] in ("paused", "cancelled", "finished")
            or not stats.get("pending", 0) + stats.get("queued", 0)):
        return "-"
    return duration(stats.get("eta_seconds"))


# (header, stats key) of the overview's count columns, pages only (robots.txt rows are in
# `status PROJECT`); short headers so that the whole table fits 80 columns (bytes, fetch
# time and retries are in `status PROJECT` too)
COUNT_COLUMNS = (("pend", "pending"), ("queue", "queued"), ("done", "done"), ("fail", "failed"),
                 ("canc", "cancelled"), ("robots", "disallowed"), ("items", "items"))


def projects_table(rows: list[tuple[str, dict[str, Any]]]) -> Table:
    """One line per project: rows per state, items, pace and ETA, within 80 columns; below
    it, the scheduler's liveness and what each waiting project waits for."""
    table = Table(title="crawlcluster projects", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                  padding=(0, 1), collapse_padding=True,
                  title_justify="left")
    table.add_column("project", overflow="fold", min_width=7)
    table.add_column("status", no_wrap=True)
    for header, _key in COUNT_COLUMNS:
        table.add_column(header, justify="right", no_wrap=True)
    table.add_column("p/s", justify="right", no_wrap=True)
    table.add_column("ETA", justify="right", no_wrap=True)
    notes: list[str] = []
    scheduler_note = None
    for name, stats in rows:
        pages = stats.get("pages") or stats
        table.add_row(name, shown_status(stats),
                      *(_count(int(pages.get(k, stats.get(k, 0)))) for _h, k in COUNT_COLUMNS),
                      _pace(stats.get("pages_per_second", 0)), shown_eta(stats))
        scheduler = stats.get("scheduler") or {}
        if scheduler:
            scheduler_note = scheduler.get("message") or _scheduler_line(scheduler)
        scheduler_message = scheduler.get("message")
        for reason in stats.get("waiting") or []:
            if reason != scheduler_message:
                notes.append(f"{name}: {reason}")
    caption = [scheduler_note] if scheduler_note else []
    table.caption = "\n".join(caption + notes) or None
    table.caption_justify = "left"
    return table


def project_detail(name: str, stats: dict[str, Any], hosts: list[dict[str, Any]],
                   top_hosts: int = 10) -> Group:
    """Windows of outcomes, pace and cost of one project, and its busiest hosts."""
    windows = Table(title=f"{name}: outcomes", show_edge=False)
    windows.add_column("window")
    for column in ("done", "failed", "retried"):
        windows.add_column(column, justify="right")
    for label, key in (("last 5 minutes", "5m"), ("last hour", "1h"), ("last day", "1d"),
                       ("all time", "all")):
        counts = stats.get("windows", {}).get(key, {})
        windows.add_row(label, *(f"{counts.get(c, 0):,}" for c in ("done", "failed", "retried")))
    cost = Table(title=f"{name}: cost by host", show_edge=False)
    for column in ("host", "fetches", "done", "failed", "retries", "downloaded", "fetch s", "browser s",
                   "rendered"):
        cost.add_column(column, justify="left" if column == "host" else "right")
    for host in hosts[:top_hosts]:
        cost.add_row(host["host"], f"{host['fetches']:,}", f"{host['done']:,}", f"{host['failed']:,}",
                     f"{host['retries']:,}", human_bytes(host["bytes"]), f"{host['fetch_seconds']:.1f}",
                     f"{host['browser_seconds']:.1f}",
                     f"{host.get('rendered', 0):,} ({100 * host.get('rendered_share', 0.0):.0f}%)")
    eta = shown_eta(stats)
    pages = stats.get("pages") or stats
    summary = (f"{shown_status(stats)}: {stats.get('pages_per_second', 0):.1f} pages/s now "
               f"({stats.get('pages_per_second_5m', 0):.1f} over 5 min), "
               f"ETA {'done' if eta == '-' and stats['status'] == 'finished' else eta}, "
               f"{pages.get('pending', 0):,} pending, {pages.get('queued', 0):,} queued, "
               f"{pages.get('done', 0):,} done, "
               f"{pages.get('failed', 0):,} failed, {pages.get('cancelled', 0):,} cancelled pages, "
               f"{human_bytes(stats.get('bytes', 0))} downloaded in "
               f"{stats.get('fetch_seconds', 0):.1f} fetch-seconds"
               + (f", {stats.get('browser_seconds', 0):.1f} browser-seconds"
                  if stats.get("browser_seconds") else ""))
    robots = {state: count for state, count in (stats.get("robots") or {}).items() if count}
    if robots:
        summary += ("\nrobots.txt: " + ", ".join(f"{count:,} {state}" for state, count in robots.items())
                    + " (one per host)")
    scheduler = stats.get("scheduler") or {}
    if scheduler.get("message"):
        summary += f"\n{scheduler['message']}"
    elif scheduler:
        summary += f"\n{_scheduler_line(scheduler)}"
    for reason in stats.get("waiting") or []:
        if reason != scheduler.get("message"):
            summary += f"\nwaiting: {reason}"
    if stats.get("pause_reason") and not stats.get("waiting"):
        summary += f"\npaused: {stats['pause_reason']}"
    for host in hosts:
        if host.get("robots_note"):
            summary += f"\nrobots.txt of {host['host']}: {host['robots_note']}"
    return Group(summary, windows, cost)
