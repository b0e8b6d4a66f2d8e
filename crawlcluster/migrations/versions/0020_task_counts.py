"""Exact per-project, per-state row counts kept by the database itself: ``task_counts``
(project, robots.txt row or page, state; and ``items``, the project's results),
``host_task_counts`` (a project's pages per host and state) and ``task_counts_delta``.

Triggers on crawl_tasks and results keep them, so that no path that inserts, deletes or
changes a row's state (today's or a future one) can miss them. On Postgres, statement-level
triggers with transition tables append one +/- delta per (project, host, kind, state) that a
statement changed to ``task_counts_delta`` (an insert into a table no one updates: no hot
row, no lock order between writers); beat's housekeeping folds the deltas into the totals,
and readers add the totals and the deltas not folded yet (:mod:`crawlcluster.database.counters`).
On SQLite, where one writer holds the database at a time, row triggers update the totals
directly. The triggers are created before the counts are filled in from the rows, within
the migration's transaction: CREATE TRIGGER locks crawl_tasks against writes until the
commit, so no change falls between the two.

Also two indexes for the console at 10^7 rows: ``ix_crawl_tasks_failed`` (a project's failed
pages by kind, status code and time) and ``ix_crawl_tasks_url`` (a project's URLs by their
first 1,000 characters in byte order: a prefix search reads one range of it).

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-04
"""
import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

FAILED_PAGES = sa.text("status = 'failed' AND callback <> '__robots__'")

# Postgres: one function per event; the UPDATE one adds +1 per new row and -1 per old row
# and keeps the sums that are not zero (an update that changes no state appends nothing)
PG_FUNCTIONS = {
    "count_crawl_tasks_insert": """
        INSERT INTO task_counts_delta (project, host, robots, status, rows)
        SELECT project, host, callback = '__robots__', status, count(*) FROM new_rows GROUP BY 1, 2, 3, 4""",
    "count_crawl_tasks_delete": """
        INSERT INTO task_counts_delta (project, host, robots, status, rows)
        SELECT project, host, callback = '__robots__', status, -count(*) FROM old_rows GROUP BY 1, 2, 3, 4""",
    "count_crawl_tasks_update": """
        INSERT INTO task_counts_delta (project, host, robots, status, rows)
        SELECT project, host, robots, status, sum(n) FROM (
            SELECT project, host, callback = '__robots__' AS robots, status, 1 AS n FROM new_rows
            UNION ALL
            SELECT project, host, callback = '__robots__', status, -1 FROM old_rows) AS moved
        GROUP BY 1, 2, 3, 4 HAVING sum(n) <> 0""",
    "count_results_insert": """
        INSERT INTO task_counts_delta (project, host, robots, status, rows)
        SELECT project, '', false, 'items', count(*) FROM new_rows GROUP BY 1""",
    "count_results_delete": """
        INSERT INTO task_counts_delta (project, host, robots, status, rows)
        SELECT project, '', false, 'items', -count(*) FROM old_rows GROUP BY 1""",
}
PG_TRIGGERS = (  # (function, table, event, transition table)
    ("count_crawl_tasks_insert", "crawl_tasks", "INSERT", "NEW TABLE AS new_rows"),
    ("count_crawl_tasks_delete", "crawl_tasks", "DELETE", "OLD TABLE AS old_rows"),
    ("count_crawl_tasks_update", "crawl_tasks", "UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
    ("count_results_insert", "results", "INSERT", "NEW TABLE AS new_rows"),
    ("count_results_delete", "results", "DELETE", "OLD TABLE AS old_rows"),
)


def _sqlite_add(row: str, sign: str) -> str:
    """SQLite statements adding ``sign`` 1 for ``row`` (NEW or OLD) to both totals."""
    return f"""
        INSERT INTO task_counts (project, robots, status, rows)
        VALUES ({row}.project, {row}.callback = '__robots__', {row}.status, {sign}1)
        ON CONFLICT (project, robots, status) DO UPDATE SET rows = task_counts.rows + excluded.rows;
        INSERT INTO host_task_counts (project, host, status, rows)
        SELECT {row}.project, {row}.host, {row}.status, {sign}1 WHERE {row}.callback <> '__robots__'
        ON CONFLICT (project, host, status) DO UPDATE SET rows = host_task_counts.rows + excluded.rows;"""


def _sqlite_items(row: str, sign: str) -> str:
    return f"""
        INSERT INTO task_counts (project, robots, status, rows) VALUES ({row}.project, 0, 'items', {sign}1)
        ON CONFLICT (project, robots, status) DO UPDATE SET rows = task_counts.rows + excluded.rows;"""


CHANGED = ("OLD.status IS NOT NEW.status OR OLD.project IS NOT NEW.project OR OLD.host IS NOT NEW.host "
           "OR OLD.callback IS NOT NEW.callback")
SQLITE_TRIGGERS = {
    "count_crawl_tasks_insert": f"AFTER INSERT ON crawl_tasks BEGIN {_sqlite_add('NEW', '')} END",
    "count_crawl_tasks_delete": f"AFTER DELETE ON crawl_tasks BEGIN {_sqlite_add('OLD', '-')} END",
    "count_crawl_tasks_update": (f"AFTER UPDATE ON crawl_tasks WHEN {CHANGED} BEGIN "
                                 f"{_sqlite_add('OLD', '-')} {_sqlite_add('NEW', '')} END"),
    "count_results_insert": f"AFTER INSERT ON results BEGIN {_sqlite_items('NEW', '')} END",
    "count_results_delete": f"AFTER DELETE ON results BEGIN {_sqlite_items('OLD', '-')} END",
}

BACKFILL = (
    """INSERT INTO task_counts (project, robots, status, rows)
       SELECT project, callback = '__robots__', status, count(*) FROM crawl_tasks GROUP BY 1, 2, 3""",
    """INSERT INTO task_counts (project, robots, status, rows)
       SELECT project, false, 'items', count(*) FROM results GROUP BY 1""",
    """INSERT INTO host_task_counts (project, host, status, rows)
       SELECT project, host, status, count(*) FROM crawl_tasks WHERE callback <> '__robots__'
       GROUP BY 1, 2, 3""",
)


def upgrade() -> None:
    op.create_table(
        "task_counts",
        sa.Column("project", sa.String(200), primary_key=True),
        sa.Column("robots", sa.Boolean, primary_key=True),
        sa.Column("status", sa.String(16), primary_key=True),
        sa.Column("rows", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    )
    op.create_table(
        "host_task_counts",
        sa.Column("project", sa.String(200), primary_key=True),
        sa.Column("host", sa.String(300), primary_key=True),
        sa.Column("status", sa.String(16), primary_key=True),
        sa.Column("rows", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    )
    op.create_table(
        "task_counts_delta",
        sa.Column("project", sa.String(200), nullable=False),
        sa.Column("host", sa.String(300), nullable=False),
        sa.Column("robots", sa.Boolean, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("rows", sa.BigInteger, nullable=False),
    )
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        for name, body in PG_FUNCTIONS.items():
            op.execute(f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql "
                       f"AS $$ BEGIN {body}; RETURN NULL; END $$")
        for name, table, event, transition in PG_TRIGGERS:
            op.execute(f"CREATE TRIGGER {name} AFTER {event} ON {table} REFERENCING {transition} "
                       f"FOR EACH STATEMENT EXECUTE FUNCTION {name}()")
    else:
        for name, body in SQLITE_TRIGGERS.items():
            op.execute(f"CREATE TRIGGER {name} {body}")
    for statement in BACKFILL:
        op.execute(statement)
    op.create_index("ix_crawl_tasks_failed", "crawl_tasks",
                    ["project", "error_kind", "status_code", "updated_at"],
                    postgresql_where=FAILED_PAGES, sqlite_where=FAILED_PAGES)
    # byte order (COLLATE "C" on Postgres, SQLite's own) so that a prefix is one range
    url_key = "substr(url, 1, 1000)" + (' COLLATE "C"' if bind.dialect.name == "postgresql" else "")
    op.execute(f"CREATE INDEX ix_crawl_tasks_url ON crawl_tasks (project, ({url_key}))")


def downgrade() -> None:
    op.drop_index("ix_crawl_tasks_url", table_name="crawl_tasks")
    op.drop_index("ix_crawl_tasks_failed", table_name="crawl_tasks")
    bind = op.get_bind()
    for name, table, _event, _transition in PG_TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}" if bind.dialect.name == "postgresql"
                   else f"DROP TRIGGER IF EXISTS {name}")
        if bind.dialect.name == "postgresql":
            op.execute(f"DROP FUNCTION IF EXISTS {name}()")
    op.drop_table("task_counts_delta")
    op.drop_table("host_task_counts")
    op.drop_table("task_counts")
