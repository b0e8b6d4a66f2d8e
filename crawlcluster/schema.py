"""The three tables: projects, crawl_tasks (the frontier) and results.

Times are unix seconds (double precision) so that Postgres and SQLite compare them the
same way and the scheduler's "due now" query is a plain index range. The Alembic
migrations in ``crawlcluster/migrations`` create exactly these tables.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Double,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

JSONType = JSON().with_variant(JSONB(), "postgresql")

# Row states of crawl_tasks.status.
PENDING, QUEUED, DONE, FAILED, CANCELLED = "pending", "queued", "done", "failed", "cancelled"
TASK_STATES = (PENDING, QUEUED, DONE, FAILED, CANCELLED)
# Project states.
RUNNING, PAUSED, FINISHED = "running", "paused", "finished"
PROJECT_STATES = (RUNNING, PAUSED, FINISHED, CANCELLED)

projects = Table(
    "projects",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("spider", String(500), nullable=False),
    Column("status", String(16), nullable=False, server_default=RUNNING),
    Column("settings", JSONType, nullable=False, server_default=text("'{}'")),
    Column("max_pages", BigInteger),
    Column("max_depth", Integer),
    Column("rate", Double),
    Column("burst", Double),
    Column("queue_limit", Integer),
    Column("tasks_created", BigInteger, nullable=False, server_default=text("0")),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    Column("finished_at", Double),
)

crawl_tasks = Table(
    "crawl_tasks",
    metadata,
    Column("task_id", String(32), primary_key=True),
    Column("project", String(200), nullable=False),
    Column("url", Text, nullable=False),
    Column("host", String(300), nullable=False),
    Column("status", String(16), nullable=False),
    Column("priority", Integer, nullable=False, server_default=text("0")),
    Column("depth", Integer, nullable=False, server_default=text("0")),
    Column("callback", String(200), nullable=False, server_default="parse"),
    # method, headers, cookies, body, timeout, proxy, render options, redirect chain;
    # NULL for a plain GET, which is most rows
    Column("fetch", JSONType),
    Column("data", JSONType),
    Column("age", Integer),
    Column("itag", String(200)),
    Column("retries_left", Integer, nullable=False, server_default=text("0")),
    Column("next_run_at", Double, nullable=False),
    Column("queued_at", Double),
    Column("deadline_at", Double),
    Column("dispatch_count", Integer, nullable=False, server_default=text("0")),
    Column("status_code", Integer),
    Column("error", Text),
    Column("final_url", Text),
    Column("etag", String(500)),
    Column("last_modified", String(100)),
    Column("fetched_at", Double),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
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
# rows whose message may have been lost
Index(
    "ix_crawl_tasks_stale",
    crawl_tasks.c.deadline_at,
    postgresql_where=crawl_tasks.c.status == QUEUED,
    sqlite_where=crawl_tasks.c.status == QUEUED,
)
# per-project counts by state (stats, finish detection, in-queue limit)
Index("ix_crawl_tasks_project_status", crawl_tasks.c.project, crawl_tasks.c.status)

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
