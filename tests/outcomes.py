"""Exact-outcome checks of a crawl of the demo site, shared by the embedded and cluster tests.

The truth is the site's own graph and its server's hit log; the crawler's side is what it
left in crawl_tasks and results.
"""

from __future__ import annotations

from collections import Counter
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import create_engine, func, select

from crawlcluster.schema import DONE, FAILED, crawl_stats, crawl_tasks, results


def target_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def load_rows(database_url: str, project: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    engine = create_engine(database_url)
    with engine.connect() as conn:
        rows = conn.execute(select(crawl_tasks).where(crawl_tasks.c.project == project))
        tasks = [dict(r._mapping) for r in rows]
        items = [dict(r._mapping) for r in conn.execute(select(results).where(results.c.project == project))]
    engine.dispose()
    return tasks, items


def assert_site_crawled(server: Any, tasks: list[dict[str, Any]], items: list[dict[str, Any]],
                        *, exactly_once: bool = True) -> None:
    site = server.site
    # robots.txt is fetched first, once (the demo site answers 404: everything allowed)
    reachable = site.reachable() | {"/robots.txt"}
    hits: Counter[str] = server.hits()

    # every reachable target fetched, each exactly once, and nothing else
    missing = sorted(t for t in reachable if hits[t] == 0)
    assert not missing, f"never fetched: {missing[:10]}"
    unexpected = sorted(t for t in hits if t not in reachable)
    assert not unexpected, f"fetched but not reachable (normalisation or off-site bug): {unexpected[:10]}"
    if exactly_once:
        doubles = {t: n for t, n in hits.items() if n > 1}
        assert not doubles, f"fetched more than once: {doubles}"

    # one row per reachable target, all on the site's host, none left open
    by_target = {target_of(row["url"]): row for row in tasks}
    assert all(row["url"].startswith(server.url + "/") for row in tasks), \
        f"off-site rows: {[r['url'] for r in tasks if not r['url'].startswith(server.url)][:5]}"
    assert set(by_target) == reachable
    assert len(tasks) == len(reachable)
    assert {row["status"] for row in tasks} <= {"done", "failed"}

    for target, title in site.html_pages.items():
        row = by_target[target]
        assert (row["status"], row["status_code"]) == ("done", 200), (target, row["status"], row["error"])
    robots = by_target["/robots.txt"]
    assert (robots["status"], robots["status_code"], robots["callback"]) == ("done", 404, "__robots__")
    for target in site.non_html:
        assert (by_target[target]["status"], by_target[target]["status_code"]) == ("done", 200)
    for target in site.not_found:
        row = by_target[target]
        assert row["status"] == "failed" and row["status_code"] == 404
        assert "HTTP 404" in row["error"]
    for hop, next_hop in zip(site.redirect_chain, site.redirect_chain[1:] + ["/chain-end"]):
        row = by_target[hop]
        assert row["status"] == "done" and row["status_code"] in (301, 302, 303, 307, 308)
        assert target_of(row["final_url"]) == next_hop
    loop_rows = [by_target[t] for t in site.redirect_loop]
    failed_loop = [r for r in loop_rows if r["status"] == "failed"]
    assert failed_loop and "redirect loop" in failed_loop[0]["error"], [(r["url"],
                                                                         r["error"]) for r in loop_rows]

    # one stored item per page (HTML or not), none per failure or redirect
    item_targets = Counter(target_of(item["url"]) for item in items)
    assert set(item_targets) == set(site.html_pages) | set(site.non_html)
    assert all(n == 1 for n in item_targets.values()), {t: n for t, n in item_targets.items() if n > 1}
    by_item_target = {target_of(item["url"]): item["item"] for item in items}
    for target, title in site.html_pages.items():
        assert by_item_target[target]["title"] == title, target
    charset_target, charset_title = site.meta_charset_page
    assert by_item_target[charset_target]["title"] == charset_title
    for target, content_type in site.non_html.items():
        assert by_item_target[target]["content_type"] == content_type


def statistics_and_rows(database_url: str, project: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """``((done, failed) in the durable statistics, (done, failed) among the rows)``: after
    any fault the statistics must count each row's outcome once (issue 15)."""
    engine = create_engine(database_url)
    with engine.connect() as conn:
        by_status = dict(conn.execute(select(crawl_tasks.c.status, func.count())
                                      .where(crawl_tasks.c.project == project)
                                      .group_by(crawl_tasks.c.status)).all())
        done, failed = conn.execute(
            select(func.coalesce(func.sum(crawl_stats.c.done), 0),
                   func.coalesce(func.sum(crawl_stats.c.failed), 0))
            .where(crawl_stats.c.project == project)).one()
    engine.dispose()
    return (int(done), int(failed)), (by_status.get(DONE, 0), by_status.get(FAILED, 0))


def assert_statistics_equal_rows(database_url: str, project: str) -> None:
    counted, rows = statistics_and_rows(database_url, project)
    assert counted == rows, \
        f"statistics (done, failed) {counted} != rows {rows}: an outcome counted twice or lost"
