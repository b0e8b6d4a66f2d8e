"""The fault matrix of issue 15 as a benchmark: one fault per cluster crawl, one table row per fault.

    python -m bench faults [--pages 10000] [--only kill-fetch,poison-page] [--timeout 900]

Each run starts from nothing: a private redis-server and a private Postgres cluster
(crawlcluster/devtools/private_services.py, on free ports, stopped by PID; the shared
services are never touched), 1 fetch, 1 parse and 1 store worker and beat started the
README's way (crawlcluster/devtools/local_cluster.py), and the fast benchmark site
(bench/fastsite.py, one process for the whole matrix, its hit counts reset per run). The
crawl (bench/fault_spiders.py, the link spider) is submitted, the fault is injected once
about 30% of the pages are stored, and the run waits up to ``--timeout`` seconds for no row
to be pending or queued. Then it counts, from the site's hit log and the tables: pages the
site has that have no result (lost), pages with more than one result (doubled), requests
beyond the first per target (repeated), the durable statistics (crawl_stats) minus the row
counts, and the processes that exited without being killed. It asserts nothing.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from rich.table import Table

from bench import report
from bench.fastsite import FastSite, FastSiteProcess
from crawlcluster.devtools.local_cluster import LocalCluster
from crawlcluster.devtools.private_services import PrivatePostgres, PrivateRedis

FINISHED = "finished"  # the project's status once beat saw no row open
REPO_ROOT = Path(__file__).resolve().parent.parent
FAULTS = ("none", "kill-fetch", "kill-parse", "kill-store", "kill-beat", "redis-restart-empty",
          "postgres-restart", "stop-fetch", "poison-page")
WHAT = {
    "none": "no fault (the baseline)",
    "kill-fetch": "SIGKILL the fetch worker's process group, restarted 3 s later",
    "kill-parse": "SIGKILL the parse worker's process group, restarted 3 s later",
    "kill-store": "SIGKILL the store worker's process group, restarted 3 s later",
    "kill-beat": "SIGKILL the leading beat; a standby beat runs",
    "redis-restart-empty": "Redis killed and started again empty",
    "postgres-restart": "Postgres restarted (pg_ctl restart -m immediate)",
    "stop-fetch": "fetch worker SIGSTOPped, then SIGCONT",
    "poison-page": "a callback calls os._exit(1) on one page",
}
FAULT_AT_FRACTION = 0.3
RESTART_AFTER_SECONDS = 3.0
POLL_SECONDS = 0.5
COLUMNS = ["fault", "pages lost", "results doubled", "finished", "s after the fault", "repeated requests",
           "stats − rows (done, failed)", "exited on their own", "notes"]


@dataclass
class FaultRun:
    fault: str
    pages: int = 0  # pages the crawl should store
    stored: int = 0
    lost: int = 0
    doubled: int = 0
    finished: bool = False
    pending: int = 0
    queued: int = 0
    seconds_after_fault: float = 0.0
    repeated: int = 0
    stats_minus_rows: tuple[int, int] = (0, 0)
    exited: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def row(self) -> list[str]:
        after = f"{self.seconds_after_fault:.1f}"
        finished = ("yes" if self.finished
                    else f"no ({self.pending} pending, {self.queued} queued after {after} s)")
        done, failed = self.stats_minus_rows
        return [self.fault, f"{self.lost:,} of {self.pages:,}", str(self.doubled), finished,
                after if self.finished else "-", f"{self.repeated:,}", f"{done:+d}, {failed:+d}",
                ", ".join(self.exited) or "none", "; ".join(self.notes)]


def expected_pages(pages: int, dead_end: str | None = None) -> set[str]:
    """The site's paths reachable from "/" (``dead_end`` is fetched but its links are never seen)."""
    site = FastSite(pages)
    seen, frontier = {0}, [0]
    while frontier:
        n = frontier.pop()
        if site.path(n) == dead_end:
            continue
        for target in site.links(n):
            if target not in seen:
                seen.add(target)
                frontier.append(target)
    return {site.path(n) for n in seen}


def poison_path(pages: int) -> str:
    return FastSite.path(max(1, pages // 3))


class Run:
    """One fault run: private services, a cluster, a crawl, the fault, the counts."""

    def __init__(self, fault: str, site: FastSiteProcess, workdir: Path, timeout_seconds: float,
                 stop_seconds: float, deadline_seconds: float | None) -> None:
        self.fault = fault
        self.site = site
        self.workdir = workdir / fault
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.timeout_seconds = timeout_seconds
        self.stop_seconds = stop_seconds
        self.deadline_seconds = deadline_seconds
        self.result = FaultRun(fault)
        self.killed: set[str] = set()
        self.fault_at = 0.0

    def env(self, broker_url: str, database_url: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update({"CRAWLCLUSTER_DATABASE_URL": database_url, "CRAWLCLUSTER_BROKER_URL": broker_url,
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])),
                    "PYTHONUNBUFFERED": "1", "CRAWLCLUSTER_SPIDER_PACKAGES": "bench"})
        env.pop("CRAWLCLUSTER_QUEUED_DEADLINE_SECONDS", None)
        if self.deadline_seconds is not None:
            env["CRAWLCLUSTER_QUEUED_DEADLINE_SECONDS"] = str(self.deadline_seconds)
        return env

    def execute(self) -> FaultRun:
        from crawlcluster import db, settings

        with PrivatePostgres() as database, PrivateRedis(self.workdir) as broker:
            os.environ["CRAWLCLUSTER_DATABASE_URL"] = database.url
            os.environ["CRAWLCLUSTER_BROKER_URL"] = broker.url
            os.environ["CRAWLCLUSTER_SPIDER_PACKAGES"] = "bench"  # bench.fault_spiders, submitted from here
            settings.reset()
            db.dispose_all()
            env = self.env(broker.url, database.url)
            with LocalCluster(env, log_dir=self.workdir, inherit_env=False) as cluster:
                try:
                    self._crawl(cluster, broker, database)
                finally:
                    self.result.exited = sorted(name for name, proc in cluster.procs.items()
                                                if proc.poll() is not None and name not in self.killed)
            db.dispose_all()
        return self.result

    def _crawl(self, cluster: LocalCluster, broker: PrivateRedis, database: PrivatePostgres) -> None:
        import crawlcluster

        for role in ("fetch", "parse", "store"):
            cluster.worker(role, role)
        cluster.beat("beat-a" if self.fault == "kill-beat" else "beat")
        if self.fault == "kill-beat":
            cluster.wait_for_log("beat-a", "took the scheduler lease", timeout=60)
            cluster.beat("beat-b")
        dead_end = poison_path(self.site.pages) if self.fault == "poison-page" else None
        expected = expected_pages(self.site.pages, dead_end)
        self.result.pages = len(expected) - (1 if dead_end else 0)
        self.site.reset()
        submitted_at = time.monotonic()
        kwargs = {"start_url": self.site.url + "/", "exit_on": dead_end or ""}
        crawl = crawlcluster.submit("bench.fault_spiders:FaultSpider", project="faults", spider_kwargs=kwargs,
                                    database_url=database.url)
        if self.fault in ("none", "poison-page"):
            self.fault_at = submitted_at
            self.result.notes.append("seconds counted from the submit")
        else:
            self._wait_for_stored(crawl, FAULT_AT_FRACTION * self.result.pages)
            self._inject(cluster, broker, database)
        self._wait_for_end(crawl, cluster)
        self._count(crawl, expected, dead_end)

    def _rows(self, crawl: Any) -> dict[str, Any] | None:
        """The crawl's row counts, or None while the database cannot be reached."""
        from sqlalchemy.exc import SQLAlchemyError

        try:
            return crawl.stats(figures=False, waiting=False)
        except SQLAlchemyError:
            crawl.engine.dispose()
            return None

    def _wait_for_stored(self, crawl: Any, pages: float) -> None:
        deadline = time.monotonic() + self.timeout_seconds
        while time.monotonic() < deadline:
            stats = self._rows(crawl)
            if stats is not None and stats["pages"]["done"] >= pages:
                return
            time.sleep(0.1)
        self.result.notes.append(f"fewer than {pages:.0f} pages stored within {self.timeout_seconds:.0f} s")

    def _inject(self, cluster: LocalCluster, broker: PrivateRedis, database: PrivatePostgres) -> None:
        self.fault_at = time.monotonic()
        fault = self.fault
        if fault.startswith("kill-") and fault != "kill-beat":
            role = fault.removeprefix("kill-")
            cluster.kill(role)
            self.killed.add(role)
            time.sleep(RESTART_AFTER_SECONDS)
            cluster.worker(f"{role}-2", role)
        elif fault == "kill-beat":
            cluster.kill("beat-a")
            self.killed.add("beat-a")
        elif fault == "redis-restart-empty":
            broker.restart_empty()
        elif fault == "postgres-restart":
            database.restart_immediate()
        elif fault == "stop-fetch":
            pgid = cluster.procs["fetch"].pid
            os.killpg(pgid, signal.SIGSTOP)
            try:
                time.sleep(self.stop_seconds)
            finally:
                os.killpg(pgid, signal.SIGCONT)
            self.result.notes.append(f"stopped {self.stop_seconds:.0f} s")

    def _wait_for_end(self, crawl: Any, cluster: LocalCluster) -> None:
        deadline = self.fault_at + self.timeout_seconds
        takeover: float | None = None
        idle_at: float | None = None  # nothing pending or queued; beat marks the project finished after
        stats = None
        while time.monotonic() < deadline:
            if self.fault == "kill-beat" and takeover is None and \
                    "took the scheduler lease" in cluster.log("beat-b"):
                takeover = time.monotonic() - self.fault_at
            current = self._rows(crawl)
            if current is not None:
                stats = current
                if stats["pending"] == 0 and stats["queued"] == 0 and idle_at is None:
                    idle_at = time.monotonic() - self.fault_at
                if stats["status"] == FINISHED:
                    self.result.finished = True
                    break
            time.sleep(POLL_SECONDS)
        self.result.seconds_after_fault = time.monotonic() - self.fault_at
        if stats is not None:
            self.result.pending, self.result.queued = stats["pending"], stats["queued"]
        if idle_at is not None and not self.result.finished:
            self.result.notes.append(f"no row open {idle_at:.1f} s after the fault, yet not finished")
        if takeover is not None:
            self.result.notes.append(f"standby took the lease {takeover:.1f} s after the kill")

    def _count(self, crawl: Any, expected: set[str], dead_end: str | None) -> None:
        from urllib.parse import urlsplit

        from crawlcluster.database.stats import sums

        per_path = Counter(urlsplit(item["url"]).path for item in crawl.results())
        self.result.stored = sum(1 for path in per_path if path in expected)
        self.result.lost = len(expected - set(per_path) - {dead_end})
        self.result.doubled = sum(1 for n in per_path.values() if n > 1)
        counts = self.site.counts()
        self.result.repeated = sum(n - 1 for n in counts.values() if n > 1)
        stats = crawl.stats(figures=False, waiting=False)
        with crawl.engine.connect() as conn:
            durable = sums(conn, crawl.project)
        self.result.stats_minus_rows = (int(durable.done) - stats["done"],
                                        int(durable.failed) - stats["failed"])
        if dead_end:
            failed = {urlsplit(row["url"]).path: row for row in crawl.failures()}
            row = failed.get(dead_end)
            self.result.notes.append(f"poison page {dead_end}: " + (f"failed, {row['error'][:90]}" if row
                                                                     else "not failed"))
        if stats["status"] != FINISHED:
            self.result.notes.append(f"project {stats['status']}")


def footnotes(pages: int, timeout_seconds: float, stop_seconds: float,
              deadline_seconds: float | None) -> list[str]:
    """What the table's figures mean and which settings the runs used."""
    deadline = ("every setting at its default (CRAWLCLUSTER_QUEUED_DEADLINE_SECONDS 600)"
                if deadline_seconds is None else
                f"CRAWLCLUSTER_QUEUED_DEADLINE_SECONDS={deadline_seconds:g}, every other setting at its "
                "default")
    return [
        f"{pages:,}-page site (bench/fastsite.py: 10–50 KB pages, about 20 same-host links each); "
        "1 fetch, 1 parse, 1 store worker and beat (celery -A crawlcluster worker -Q ROLE / beat), "
        "a private redis-server and a private Postgres 15 per run; " + deadline + ".",
        "faults: " + "; ".join(f"{name}: {text}" for name, text in WHAT.items() if name != "none")
        + f". Injected once {FAULT_AT_FRACTION:.0%} of the pages were stored; stop-fetch lasts "
          f"{stop_seconds:g} s.",
        "pages lost: pages reachable from / (the poison page's own links excepted) without a result; "
        "results doubled: pages with more than one result row; finished: the project's status became "
        f"`finished` (beat saw no row pending or queued) within {timeout_seconds:g} s of the fault; "
        "repeated requests: requests to a target beyond its first, from the site's hit log; "
        "stats − rows: crawl_stats' done and failed sums minus the rows done and failed (robots.txt rows "
        "included); exited on their own: cluster processes that exited "
        "without being killed by the bench.",
    ]


def main(pages: int = 10_000, only: str | None = None, timeout_seconds: float = 900,
         stop_seconds: float = 60, deadline_seconds: float | None = None,
         write_results: bool = False, keep_logs: str | None = None) -> None:
    console = Console(width=None if Console().is_terminal else 200)
    faults = FAULTS if not only else tuple(name.strip() for name in only.split(",") if name.strip())
    unknown = [name for name in faults if name not in FAULTS]
    if unknown:
        raise SystemExit(f"unknown faults {unknown}; choose from {', '.join(FAULTS)}")
    site = FastSiteProcess(pages)
    runs: list[FaultRun] = []
    progress: Callable[[str], None] = lambda text: console.print(text, style="dim")  # noqa: E731
    try:
        with tempfile.TemporaryDirectory(prefix="crawlcluster-faults-") as scratch:
            for fault in faults:
                progress(f"{fault}: {WHAT[fault]} ...")
                started = time.monotonic()
                # each fault's process logs go to DIR/FAULT, kept with --keep-logs
                run = Run(fault, site, Path(keep_logs or scratch), timeout_seconds, stop_seconds,
                          deadline_seconds)
                runs.append(run.execute())
                progress(f"{fault}: {time.monotonic() - started:.0f} s; " + " | ".join(runs[-1].row()[1:]))
    finally:
        site.stop()
    table = Table(title=f"Fault matrix on a {pages:,}-page site")
    for column in COLUMNS:
        table.add_column(column)
    for result in runs:
        table.add_row(*result.row())
    console.print(table)
    notes = footnotes(pages, timeout_seconds, stop_seconds, deadline_seconds)
    for number, note in enumerate(notes, 1):
        console.print(f"{number}. {note}")
    if write_results:
        measured = report.now_utc()
        text = (f"## Fault matrix on a {pages:,}-page site ({measured[:10]})\n\n"
                f"Measured {measured} with `{report.command_line()}`.\n\n"
                f"{report.machine_description()}\n\n"
                + report.markdown_table(COLUMNS, [r.row() for r in runs]) + "\n\n"
                + "\n".join(f"{n}. {note}" for n, note in enumerate(notes, 1)))
        report.write_section(f"faults-{pages}", text)
