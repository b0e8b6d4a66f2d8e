"""Render tier: pages/s with 1, 2 and 4 pages in flight, and the browser's memory over 1,000 pages.

    python -m bench render [--pages 120] [--memory-pages 1000] [--no-baseline]

One render worker process's engine (``workers.browser.renderer.Renderer``, the object a
``-Q render`` worker process holds) renders simple local pages whose content JavaScript
writes (``crawlcluster/devtools/js_site.py``, served from a child process so it does not share this
process's GIL), in batches of 16 as the render task receives them. Pages/s is measured
after the browser is up; recycling stays on (every 100 pages, the default), so its cost is
in the figure. Memory is the browser's process tree after 100, 500 and 1,000 pages: PSS
(what the limit is set on) and summed RSS (which counts shared pages once per process),
with recycling on and, for comparison, with one browser for the whole run.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from typing import Any

from rich.console import Console
from rich.table import Table

BATCH = 16
MIB = 1024 * 1024


def _serve(pages: int, conn: Any) -> None:
    from crawlcluster.devtools.js_site import JsSite

    site = JsSite(pages=pages)
    conn.send(site.url)
    conn.recv()  # until the parent says stop (or goes away)
    site.stop()


def _renderer(pages_in_flight: int, recycle_pages: int) -> Any:
    from crawlcluster import settings
    from workers.browser.renderer import Renderer

    own = settings.current()
    return Renderer(chromium_path=own.chromium_path, pages_in_flight=pages_in_flight,
                    recycle_pages=recycle_pages, max_pss_bytes=own.render_max_pss_bytes,
                    page_timeout_seconds=30, launch_timeout_seconds=30, user_agent=own.user_agent)


def _entries(url: str, pages: int, start: int, count: int) -> list[dict[str, Any]]:
    return [{"id": str(i), "url": f"{url}/page/{1 + i % pages}"} for i in range(start, start + count)]


def _trust(url: str) -> list[str]:
    """The local site as a project's start host: what the address guard lets the browser reach."""
    return [url.split("://", 1)[1]]


def measure_speed(url: str, site_pages: int, in_flight: int, pages: int) -> dict[str, Any]:
    renderer = _renderer(in_flight, 100)
    try:
        renderer.render_many(_entries(url, site_pages, 0, 4), trust=_trust(url))  # start the browser
        started = time.perf_counter()
        done = failed = 0
        while done + failed < pages:
            results = renderer.render_many(_entries(url, site_pages, done + failed,
                                                    min(BATCH, pages - done - failed)), trust=_trust(url))
            done += sum(r.ok for r in results)
            failed += sum(not r.ok for r in results)
        elapsed = time.perf_counter() - started
        return {"in_flight": in_flight, "pages": done, "failed": failed, "seconds": elapsed,
                "pages_per_second": done / elapsed, "recycles": renderer.counters.recycles}
    finally:
        renderer.close()


def measure_memory(url: str, site_pages: int, recycle_pages: int,
                   checkpoints: list[int]) -> list[dict[str, Any]]:
    renderer = _renderer(4, recycle_pages)
    rows = []
    try:
        rendered = 0
        for checkpoint in checkpoints:
            while rendered < checkpoint:
                count = min(BATCH, checkpoint - rendered)
                renderer.render_many(_entries(url, site_pages, rendered, count), trust=_trust(url))
                rendered += count
            memory = renderer.memory()
            rows.append({"pages": rendered, "processes": memory.processes, "pss": memory.pss_bytes,
                         "rss": memory.rss_bytes, "recycles": renderer.counters.recycles,
                         "failures": renderer.counters.render_failures})
    finally:
        renderer.close()
    return rows


def main(pages: int = 120, memory_pages: int = 1000, baseline: bool = True) -> None:
    console = Console(width=140)
    site_pages = 1000
    parent, child = multiprocessing.Pipe()
    server = multiprocessing.Process(target=_serve, args=(site_pages, child), daemon=True)
    server.start()
    url = parent.recv()
    try:
        speed = [measure_speed(url, site_pages, n, pages) for n in (1, 2, 4)]
        checkpoints = [c for c in (100, 500, 1000) if c < memory_pages] + [memory_pages]
        recycled = measure_memory(url, site_pages, 100, checkpoints)
        one_browser = measure_memory(url, site_pages, 0, checkpoints) if baseline else []
    finally:
        parent.send("stop")
        server.join(timeout=10)

    console.print(f"[bold]Render worker process, {os.cpu_count()} cores, Chromium at /usr/bin/chromium; "
                  f"{pages} JS-written local pages per row, batches of {BATCH}[/bold]")
    table = Table("pages in flight", "pages/s", "seconds", "pages", "failed", "recycles")
    for row in speed:
        table.add_row(str(row["in_flight"]), f"{row['pages_per_second']:.1f}", f"{row['seconds']:.1f}",
                      str(row["pages"]), str(row["failed"]), str(row["recycles"]))
    console.print(table)

    memory = Table("pages rendered", "browser tree PSS (MiB)", "summed RSS (MiB)", "processes", "recycles",
                   *(["one browser: PSS (MiB)", "one browser: summed RSS (MiB)"] if one_browser else []))
    for i, row in enumerate(recycled):
        extra = [f"{one_browser[i]['pss'] / MIB:.0f}",
                 f"{one_browser[i]['rss'] / MIB:.0f}"] if one_browser else []
        memory.add_row(str(row["pages"]), f"{row['pss'] / MIB:.0f}", f"{row['rss'] / MIB:.0f}",
                       str(row["processes"]), str(row["recycles"]), *extra)
    console.print("[bold]Browser memory, 4 pages in flight, recycling every 100 pages[/bold]")
    console.print(memory)
    first, last = recycled[0]["pss"], recycled[-1]["pss"]
    console.print(f"PSS after {recycled[-1]['pages']} pages / after {recycled[0]['pages']}: "
                  f"{last / first:.2f}")
