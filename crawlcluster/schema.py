"""The tables: projects, crawl_tasks (the frontier), results, and the browser tier's render_hosts,
screenshots and render_workers.

Times are unix seconds (double precision) so that Postgres and SQLite compare them the
same way and the scheduler's "due now" query is a plain index range. The Alembic
migrations in ``crawlcluster/migrations`` create exactly these tables (tests/test_schema.py
compares a freshly migrated database with them); each table is declared whole here, in
reading order, while the migrations keep the history of how its columns arrived.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Double,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    false,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

JSONType = JSON().with_variant(JSONB(), "postgresql")

# Row states of crawl_tasks.status.
PENDING, QUEUED, DONE, FAILED, CANCELLED = "pending", "queued", "done", "failed", "cancelled"
DISALLOWED = "disallowed"  # robots.txt forbids it; never fetched
TASK_STATES = (PENDING, QUEUED, DONE, FAILED, CANCELLED, DISALLOWED)
# crawl_tasks.callback of a host's robots.txt row: the scheduler's own request, not a page
# (the partial index ix_crawl_tasks_robots names it as text)
ROBOTS_CALLBACK = "__robots__"
# Project states.
RUNNING, PAUSED, FINISHED = "running", "paused", "finished"

projects = Table(
    "projects",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("spider", String(500), nullable=False),  # import path of the spider class
    # running, paused, finished or cancelled; every write goes through crawlcluster.projects
    Column("status", String(16), nullable=False, server_default=RUNNING),
    # why a paused project is paused ("paused by the user", or the failure streak that
    # auto-paused it) (migration 0004)
    Column("pause_reason", Text),
    Column("paused_until", Double),  # auto-paused until then, then a trial batch (0004)
    # fetches in a row that failed; the auto-pause counts these (migration 0004)
    Column("consecutive_failures", Integer, nullable=False, server_default=text("0")),
    Column("delete_at", Double),  # a cancelled project's rows and results go then (0004)
    Column("settings", JSONType, nullable=False, server_default=text("'{}'")),
    Column("max_pages", BigInteger),
    Column("max_depth", Integer),
    Column("rate", Double),  # token bucket: dispatches per second and burst size
    Column("burst", Double),
    Column("queue_limit", Integer),  # most rows of the project queued at once
    # rows ever inserted, the budget max_pages bounds
    Column("tasks_created", BigInteger, nullable=False, server_default=text("0")),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    Column("finished_at", Double),
)

crawl_tasks = Table(
    "crawl_tasks",
    metadata,
    # a stable hash of project and normalised URL (plus method and body when they differ)
    Column("task_id", String(32), primary_key=True),
    Column("project", String(200), nullable=False),
    Column("url", Text, nullable=False),
    Column("host", String(300), nullable=False),
    Column("status", String(16), nullable=False),  # one of TASK_STATES
    Column("priority", Integer, nullable=False, server_default=text("0")),
    Column("depth", Integer, nullable=False, server_default=text("0")),
    # the spider method that parses the page; "__robots__" marks a host's robots.txt row
    Column("callback", String(200), nullable=False, server_default="parse"),
    # method, headers, cookies, body, timeout, proxy, render options, redirect chain;
    # NULL for a plain GET, which is most rows
    Column("fetch", JSONType),
    Column("data", JSONType),  # what the spider passed on to the callback
    # schedule: re-crawl age in seconds, the itag that forces a re-crawl when it changes,
    # and with auto_recrawl=True a done row becomes due again every `age` seconds
    Column("age", Integer),
    Column("itag", String(200)),
    Column("auto_recrawl", Boolean, nullable=False, server_default=false()),
    Column("retries_left", Integer, nullable=False, server_default=text("0")),
    # fetches of the row that timed out since it was last fetched fine (or re-opened): the
    # retry policy's timeout_retries bounds these alone, whatever other failures came
    # before (migration 0010)
    Column("timeouts", Integer, nullable=False, server_default=text("0")),
    Column("next_run_at", Double, nullable=False),  # due time of a pending row
    Column("queued_at", Double),
    # a queued row still queued after this lost its message and is sent again
    Column("deadline_at", Double),
    Column("dispatch_count", Integer, nullable=False, server_default=text("0")),
    # sends again after the deadline since the row was last claimed from pending: at
    # max_dispatches sends without an outcome the row fails (migration 0012)
    Column("resends", Integer, nullable=False, server_default=text("0")),
    # parse runs of the row that began and never finished (its worker process died or
    # was killed at the time limit): at max_worker_crashes the row fails (migration 0012)
    Column("crashes", Integer, nullable=False, server_default=text("0")),
    Column("status_code", Integer),
    Column("error", Text),
    # what kind of failure ended (or is retrying) the row: http, timeout, dns, connect,
    # robots, redirect, callback, ... (migration 0008); NULL for rows that did not fail
    Column("error_kind", String(32)),
    Column("final_url", Text),  # where redirects ended
    Column("etag", String(500)),  # for conditional re-crawls
    Column("last_modified", String(100)),
    Column("fetched_at", Double),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    # the worker process working on a queued row (migration 0013): when its worker_leases row
    # expires the row is due again, long before its deadline
    Column("held_by", String(300)),
)

# "due pending rows of a project, by priority": the scheduler's claim walks this index in
# order and stops after its batch, however many rows the frontier holds.
Index(
    "ix_crawl_tasks_due",
    crawl_tasks.c.project,
    crawl_tasks.c.priority.desc(),
    crawl_tasks.c.next_run_at,
    postgresql_where=crawl_tasks.c.status == PENDING,
    sqlite_where=crawl_tasks.c.status == PENDING,
)
# rows whose message may have been lost; also lists the queued rows the scheduler counts
Index(
    "ix_crawl_tasks_stale",
    crawl_tasks.c.deadline_at,
    postgresql_where=crawl_tasks.c.status == QUEUED,
    sqlite_where=crawl_tasks.c.status == QUEUED,
)
# per-project counts by state (stats, finish detection, deletion), queued rows left out:
# a claim's rows are listed by ix_crawl_tasks_stale, and each index that takes an entry
# for every claimed row slows the claim (migration 0007)
Index(
    "ix_crawl_tasks_project_state",
    crawl_tasks.c.project,
    crawl_tasks.c.status,
    postgresql_where=crawl_tasks.c.status != QUEUED,
    sqlite_where=crawl_tasks.c.status != QUEUED,
)
# a project's robots.txt rows (one per host) per state, so that page counts leave them
# out without reading the pages (migration 0011); the condition is written out as text,
# which is how SQLite matches a query to a partial index
Index(
    "ix_crawl_tasks_robots",
    crawl_tasks.c.project,
    crawl_tasks.c.status,
    postgresql_where=text("callback = '__robots__'"),
    sqlite_where=text("callback = '__robots__'"),
)
# pending rows of a project by due time: the earliest and latest due time and the rows not
# due yet (retries waiting) are read from its ends, never by aggregating every pending row
# (migration 0011)
Index(
    "ix_crawl_tasks_pending_due",
    crawl_tasks.c.project,
    crawl_tasks.c.next_run_at,
    postgresql_where=crawl_tasks.c.status == PENDING,
    sqlite_where=crawl_tasks.c.status == PENDING,
)

# a project's failed pages by kind (migration 0020): the console's failures grouped by kind,
# and a sample of each group, read from this index alone, however many rows succeeded
Index(
    "ix_crawl_tasks_failed",
    crawl_tasks.c.project,
    crawl_tasks.c.error_kind,
    crawl_tasks.c.status_code,
    crawl_tasks.c.updated_at,
    postgresql_where=text("status = 'failed' AND callback <> '__robots__'"),
    sqlite_where=text("status = 'failed' AND callback <> '__robots__'"),
)
# a project's URLs by their first 1,000 characters in byte order (migration 0020): the
# console's prefix search reads one range of it. An expression index, created by the
# migration with `COLLATE "C"` on Postgres (reflection reports the collation apart from the
# expression, and Alembic compares the expression) and as `substr(url, 1, 1000)` on SQLite,
# whose own order is bytes and whose reflection skips expression indexes.
# Queued rows are left out (migration 0023): a claim then adds no entry to it.
Index("ix_crawl_tasks_url", crawl_tasks.c.project, text("substr(url, 1, 1000)"),
      postgresql_where=text("status <> 'queued'")).ddl_if(dialect="postgresql")

results = Table(
    "results",
    metadata,
    Column("task_id", String(32), primary_key=True),
    Column("item_index", Integer, primary_key=True),
    Column("project", String(200), nullable=False),
    Column("url", Text, nullable=False),
    Column("item", JSONType, nullable=False),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
)
Index("ix_results_project", results.c.project, results.c.task_id)

# -- the browser tier (migration 0002) -------------------------------------------------

# render="auto": what was learned per host, callback and URL shape (migration 0021): a
# decision of "render" sends the key's rows straight to render; callback and shape "" mean
# the whole host (rows from before 0021)
render_hosts = Table(
    "render_hosts",
    metadata,
    Column("project", String(200), primary_key=True),
    Column("host", String(300), primary_key=True),
    Column("callback", String(200), primary_key=True),
    Column("shape", String(500), primary_key=True),
    Column("decision", String(16), nullable=False, server_default="render"),  # render, plain, learning
    Column("samples", Integer, nullable=False, server_default=text("0")),  # pages compared both ways
    Column("agreed", Integer, nullable=False, server_default=text("0")),
    Column("mismatches", Integer, nullable=False, server_default=text("0")),
    Column("first_url", Text, nullable=False),
    Column("reason", Text),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double),
    # pages parsed plainly before the key needed a browser, sent back to render once (0024)
    Column("rerendered", Integer, nullable=False, server_default=text("0")),
    # and those left as parsed plainly, past render_auto_rerender_max (0024)
    Column("rerender_skipped", Integer, nullable=False, server_default=text("0")),
)

# render="auto": pages parsed from a plain fetch, by key (migration 0024); when the key is
# found to need a browser they are rendered and parsed once more
render_pages_plain = Table(
    "render_pages_plain",
    metadata,
    Column("task_id", String(32), primary_key=True),
    Column("project", String(200), nullable=False),
    Column("host", String(300), nullable=False),
    Column("callback", String(200), nullable=False),
    Column("shape", String(500), nullable=False),
    Column("parsed_at", Double, nullable=False),
)
Index("ix_render_pages_plain_key", render_pages_plain.c.project, render_pages_plain.c.host,
      render_pages_plain.c.callback, render_pages_plain.c.shape, render_pages_plain.c.parsed_at)

# screenshot=True: one PNG per task, kept beside its results and replaced on a re-render
screenshots = Table(
    "screenshots",
    metadata,
    Column("task_id", String(32), primary_key=True),
    Column("project", String(200), nullable=False),
    Column("url", Text, nullable=False),
    Column("png", LargeBinary, nullable=False),
    Column("created_at", Double, nullable=False),
)
Index("ix_screenshots_project", screenshots.c.project, screenshots.c.task_id)

# one row per render worker process: its browser's counters, written after every batch
render_workers = Table(
    "render_workers",
    metadata,
    Column("worker", String(300), primary_key=True),
    Column("hostname", String(200), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("browser_pid", Integer),
    Column("browsers_launched", Integer, nullable=False, server_default=text("0")),
    Column("pages_rendered", BigInteger, nullable=False, server_default=text("0")),
    Column("render_failures", BigInteger, nullable=False, server_default=text("0")),
    Column("recycles", Integer, nullable=False, server_default=text("0")),
    Column("crashes", Integer, nullable=False, server_default=text("0")),
    Column("hung_kills", Integer, nullable=False, server_default=text("0")),
    Column("browser_pss_bytes", BigInteger),
    Column("browser_rss_bytes", BigInteger),
    Column("started_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    # requests of pages the browser's guard proxy refused (migration 0016)
    Column("refused_requests", BigInteger, nullable=False, server_default=text("0")),
)

# -- per-host politeness (migration 0003) -------------------------------------------------

# States of hosts.robots_status. After robots_error_attempts failed fetches (error) in a
# row a host is unreachable: its rows fail.
ROBOTS_UNKNOWN, ROBOTS_FETCHING, ROBOTS_OK = "unknown", "fetching", "ok"
ROBOTS_MISSING, ROBOTS_ERROR = "missing", "error"
ROBOTS_UNREACHABLE = "unreachable"

# robots.txt per host, fetched once and shared by every project; Crawl-delay raises the
# host's delay, a 5xx or unreachable robots.txt blocks the host until blocked_until
hosts = Table(
    "hosts",
    metadata,
    Column("host", String(300), primary_key=True),
    # unknown, fetching, ok, missing, error (retrying) or unreachable: what robots.txt gave
    Column("robots_status", String(16), nullable=False, server_default="unknown"),
    Column("robots_body", Text),
    Column("crawl_delay", Double),
    Column("robots_fetched_at", Double),
    Column("robots_expires_at", Double),
    # failed robots.txt fetches in a row and the last one's reason (migration 0009): after
    # CRAWLCLUSTER_ROBOTS_ERROR_ATTEMPTS the host is unreachable and its rows fail
    Column("robots_failures", Integer, nullable=False, server_default="0"),
    Column("robots_error", Text),
    # what robots.txt asked that was not granted (migration 0015): a Crawl-delay over
    # max_crawl_delay_seconds, a body over max_robots_bytes
    Column("robots_note", Text),
    Column("blocked_until", Double),
    Column("updated_at", Double, nullable=False),
)

# (migration 0006 dropped ix_crawl_tasks_queued_host: the per-host count of queued rows
# reads them through ix_crawl_tasks_stale, and each index over queued rows slows claims)

# -- scheduler state (migration 0004) -----------------------------------------------------

# the single dispatching beat holds this lease; token is the fencing token
scheduler_lease = Table(
    "scheduler_lease",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("holder", String(300), nullable=False),
    Column("token", BigInteger, nullable=False),
    Column("expires_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    # the broker's (Redis) run id the leader last saw, so a new leader notices a restart it
    # did not see happen (migration 0014)
    Column("broker_run_id", String(100)),
)

# one row per worker process holding crawl_tasks rows (held_by), renewed by its heartbeat
# thread; a row whose holder's lease expired is made due again (migration 0013)
worker_leases = Table(
    "worker_leases",
    metadata,
    Column("worker", String(300), primary_key=True),
    Column("expires_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
)

# @every methods of a project's spider, and `crawlcluster schedule` re-seeding
project_timers = Table(
    "project_timers",
    metadata,
    Column("project", String(200), primary_key=True),
    Column("name", String(200), primary_key=True),
    Column("interval_seconds", Double, nullable=False),
    Column("last_run_at", Double),
    Column("created_at", Double, nullable=False),
)

# -- durable statistics (migration 0005) ---------------------------------------------------

# fetch latency histogram buckets (seconds) and their columns (counts per bucket, not cumulative)
LATENCY_BOUNDS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, float("inf"))
# links dropped past max_url_length, with a host that cannot be a DNS name, past
# max_links_per_page; pages whose nesting was capped at max_html_depth; crawler-trap rows
BOUND_COLUMNS = ("links_too_long", "links_bad_host", "links_over_limit", "html_depth_capped", "trap_links")
LATENCY_COLUMNS = ("le_100ms", "le_250ms", "le_500ms", "le_1s", "le_2500ms", "le_5s", "le_10s", "le_inf")

# what the store stage saw, per project, host and minute: outcomes and what they cost
crawl_stats = Table(
    "crawl_stats",
    metadata,
    Column("project", String(200), primary_key=True),
    Column("host", String(300), primary_key=True),
    Column("minute", Double, primary_key=True),
    Column("fetched", BigInteger, nullable=False, server_default=text("0")),
    Column("done", BigInteger, nullable=False, server_default=text("0")),
    Column("failed", BigInteger, nullable=False, server_default=text("0")),
    Column("retried", BigInteger, nullable=False, server_default=text("0")),
    Column("bytes", BigInteger, nullable=False, server_default=text("0")),
    Column("fetch_seconds", Double, nullable=False, server_default=text("0")),
    Column("browser_seconds", Double, nullable=False, server_default=text("0")),
    *[Column(name, BigInteger, nullable=False, server_default=text("0")) for name in LATENCY_COLUMNS],
    # what pages' bounds dropped or stopped (migration 0017; workers.page_bounds)
    *[Column(name, BigInteger, nullable=False, server_default=text("0")) for name in BOUND_COLUMNS],
    # pages rendered by the browser tier (migration 0021): their share of the host's pages
    Column("rendered", BigInteger, nullable=False, server_default=text("0")),
)
Index("ix_crawl_stats_minute", crawl_stats.c.project, crawl_stats.c.minute)

# -- end-of-crawl counts (migration 0019) ---------------------------------------------------

# what a Scrapy user reads at the end of a crawl, per project, added by the store stage with
# each row's state change: responses by status code (tally "status", name "200"), items
# stored ("items", "scraped"), items the pipelines dropped by reason ("dropped", the reason)
# and links not followed ("links", "offsite" or "duplicate")
crawl_tallies = Table(
    "crawl_tallies",
    metadata,
    Column("project", String(200), primary_key=True),
    Column("tally", String(20), primary_key=True),
    Column("name", String(200), primary_key=True),
    Column("count", BigInteger, nullable=False, server_default=text("0")),
)


# -- exact row counts (migration 0020) -------------------------------------------------------

# crawl_tasks rows per project, kind (robots.txt row or page) and state, and (state ``items``)
# the project's results; kept by triggers on crawl_tasks and results, so no writer can miss
# them (crawlcluster.database.counters says how, and how they stay exact)
ITEMS = "items"
task_counts = Table(
    "task_counts",
    metadata,
    Column("project", String(200), primary_key=True),
    Column("robots", Boolean, primary_key=True),
    Column("status", String(16), primary_key=True),
    Column("rows", BigInteger, nullable=False, server_default=text("0")),
)

# a project's pages (robots.txt rows left out) per host and state: the console's host table
host_task_counts = Table(
    "host_task_counts",
    metadata,
    Column("project", String(200), primary_key=True),
    Column("host", String(300), primary_key=True),
    Column("status", String(16), primary_key=True),
    Column("rows", BigInteger, nullable=False, server_default=text("0")),
)

# Postgres: the +/- changes each statement made, appended by the statement triggers and
# folded into the two tables above by beat's housekeeping (SQLite's row triggers update
# them directly and leave this empty); host is '' for items
task_counts_delta = Table(
    "task_counts_delta",
    metadata,
    Column("project", String(200), nullable=False),
    Column("host", String(300), nullable=False),
    Column("robots", Boolean, nullable=False),
    Column("status", String(16), nullable=False),
    Column("rows", BigInteger, nullable=False),
)


# -- all-time crawl figures per project (migration 0022) -------------------------------------

# crawl_stats' counters summed over all of a project's hosts and minutes, kept as the row
# counts are (triggers on crawl_stats; deltas appended on Postgres and folded by beat's
# housekeeping, totals updated directly on SQLite): "all time" in O(projects)
STAT_TOTAL_COLUMNS = ("fetched", "done", "failed", "retried", "bytes", "rendered", *BOUND_COLUMNS,
                      "fetch_seconds", "browser_seconds")


def _stat_total_columns() -> list[Column]:
    return [Column(name, Double if name.endswith("_seconds") else BigInteger, nullable=False,
                   server_default=text("0")) for name in STAT_TOTAL_COLUMNS]


project_stat_totals = Table(
    "project_stat_totals",
    metadata,
    Column("project", String(200), primary_key=True),
    *_stat_total_columns(),
)
project_stat_deltas = Table(
    "project_stat_deltas",
    metadata,
    Column("project", String(200), nullable=False),
    *_stat_total_columns(),
)
