"""What `crawlcluster status` draws: per-project rows per state, outcome windows, pace, ETA
and cost, as rich renderables (once, or live with --watch)."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table


def _size(value: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return str(value)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def projects_table(rows: list[tuple[str, dict[str, Any]]]) -> Table:
    table = Table(title="crawlcluster projects")
    columns = ("project", "status", "pending", "queued", "done", "failed", "disallowed", "items",
               "pages/s", "ETA", "downloaded", "retries")
    for column in columns:
        table.add_column(column, justify="left" if column in ("project", "status") else "right")
    for name, stats in rows:
        table.add_row(
            name, str(stats["status"]),
            *(f"{stats.get(k, 0):,}" for k in ("pending", "queued", "done", "failed", "disallowed", "items")),
            f"{stats.get('pages_per_second', 0):.1f}",
            _duration(stats.get("eta_seconds")) if stats.get("pending", 0) + stats.get("queued", 0) else "-",
            _size(stats.get("bytes", 0)), f"{stats.get('retries', 0):,}",
        )
    return table


def project_detail(name: str, stats: dict[str, Any], hosts: list[dict[str, Any]], top_hosts: int = 10) -> Group:
    """Windows of outcomes, pace and cost of one project, and its busiest hosts."""
    windows = Table(title=f"{name}: outcomes", show_edge=False)
    windows.add_column("window")
    for column in ("done", "failed", "retried"):
        windows.add_column(column, justify="right")
    for label, key in (("last 5 minutes", "5m"), ("last hour", "1h"), ("last day", "1d"), ("all time", "all")):
        counts = stats.get("windows", {}).get(key, {})
        windows.add_row(label, *(f"{counts.get(c, 0):,}" for c in ("done", "failed", "retried")))
    cost = Table(title=f"{name}: cost by host", show_edge=False)
    for column in ("host", "fetches", "done", "failed", "retries", "downloaded", "fetch s", "browser s"):
        cost.add_column(column, justify="left" if column == "host" else "right")
    for host in hosts[:top_hosts]:
        cost.add_row(host["host"], f"{host['fetches']:,}", f"{host['done']:,}", f"{host['failed']:,}",
                     f"{host['retries']:,}", _size(host["bytes"]), f"{host['fetch_seconds']:.1f}",
                     f"{host['browser_seconds']:.1f}")
    summary = (f"{stats['status']}: {stats.get('pages_per_second', 0):.1f} pages/s now "
               f"({stats.get('pages_per_second_5m', 0):.1f} over 5 min), "
               f"ETA {_duration(stats.get('eta_seconds')) if stats['pending'] + stats['queued'] else 'done'}, "
               f"{_size(stats.get('bytes', 0))} downloaded in {stats.get('fetch_seconds', 0):.1f} fetch-seconds"
               + (f", {stats.get('browser_seconds', 0):.1f} browser-seconds" if stats.get("browser_seconds") else ""))
    if stats.get("pause_reason"):
        summary += f"\npaused: {stats['pause_reason']}"
    return Group(summary, windows, cost)
