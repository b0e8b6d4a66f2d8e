"""All-time crawl figures per project kept by the database itself: ``project_stat_totals``
(crawl_stats' counters summed over every host and minute of a project) and
``project_stat_deltas``, so that "all time" is read in O(projects) however many hosts and
minutes crawl_stats holds.

As for the row counters (migration 0020): on Postgres, statement triggers on crawl_stats
append one signed delta per project a statement changed (an insert into a table no one
updates: no hot row for the store stage's transactions); beat's housekeeping folds them
into the totals and readers add the deltas not folded yet. On SQLite, row triggers update
the totals directly. The triggers are created before the totals are filled in from
crawl_stats, in the migration's transaction (CREATE TRIGGER locks crawl_stats until commit).

Revision ID: 0022
Revises: 0021
Create Date: 2026-11-30
"""
import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

INTEGERS = ("fetched", "done", "failed", "retried", "bytes", "rendered", "links_too_long", "links_bad_host",
            "links_over_limit", "html_depth_capped", "trap_links")
FLOATS = ("fetch_seconds", "browser_seconds")
COLUMNS = INTEGERS + FLOATS
NAMES = ", ".join(COLUMNS)


def _sums(sign: str, table: str) -> str:
    """The columns' sums (negated with ``sign`` '-') and FROM ``table`` (what follows FROM)."""
    return ", ".join(f"{sign}sum({name})" for name in COLUMNS) + f" FROM {table}"


PG_FUNCTIONS = {
    "stat_totals_insert": f"INSERT INTO project_stat_deltas (project, {NAMES}) "
                          f"SELECT project, {_sums('', 'new_rows')} GROUP BY project",
    "stat_totals_delete": f"INSERT INTO project_stat_deltas (project, {NAMES}) "
                          f"SELECT project, {_sums('-', 'old_rows')} GROUP BY project",
    "stat_totals_update": f"INSERT INTO project_stat_deltas (project, {NAMES}) "
                          f"SELECT project, {_sums('', '')}"
                          f"(SELECT project, {NAMES} FROM new_rows UNION ALL SELECT project, "
                          + ", ".join(f"-{name}" for name in COLUMNS) + " FROM old_rows) AS moved "
                          "GROUP BY project",
}
PG_TRIGGERS = (
    ("stat_totals_insert", "INSERT", "NEW TABLE AS new_rows"),
    ("stat_totals_delete", "DELETE", "OLD TABLE AS old_rows"),
    ("stat_totals_update", "UPDATE", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
)


def _sqlite_add(row: str, sign: str) -> str:
    values = ", ".join(f"{sign}{row}.{name}" for name in COLUMNS)
    updates = ", ".join(f"{name} = project_stat_totals.{name} + excluded.{name}" for name in COLUMNS)
    return (f"INSERT INTO project_stat_totals (project, {NAMES}) VALUES ({row}.project, {values}) "
            f"ON CONFLICT (project) DO UPDATE SET {updates};")


SQLITE_TRIGGERS = {
    "stat_totals_insert": f"AFTER INSERT ON crawl_stats BEGIN {_sqlite_add('NEW', '')} END",
    "stat_totals_delete": f"AFTER DELETE ON crawl_stats BEGIN {_sqlite_add('OLD', '-')} END",
    "stat_totals_update": f"AFTER UPDATE ON crawl_stats BEGIN {_sqlite_add('OLD', '-')} "
                          f"{_sqlite_add('NEW', '')} END",
}


def _columns() -> list[sa.Column]:
    return ([sa.Column(name, sa.BigInteger, nullable=False, server_default=sa.text("0")) for name in INTEGERS]
            + [sa.Column(name, sa.Double, nullable=False, server_default=sa.text("0")) for name in FLOATS])


def upgrade() -> None:
    op.create_table("project_stat_totals", sa.Column("project", sa.String(200), primary_key=True),
                    *_columns())
    op.create_table("project_stat_deltas", sa.Column("project", sa.String(200), nullable=False), *_columns())
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        for name, body in PG_FUNCTIONS.items():
            op.execute(f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql "
                       f"AS $$ BEGIN {body}; RETURN NULL; END $$")
        for name, event, transition in PG_TRIGGERS:
            op.execute(f"CREATE TRIGGER {name} AFTER {event} ON crawl_stats REFERENCING {transition} "
                       f"FOR EACH STATEMENT EXECUTE FUNCTION {name}()")
    else:
        for name, body in SQLITE_TRIGGERS.items():
            op.execute(f"CREATE TRIGGER {name} {body}")
    op.execute(f"INSERT INTO project_stat_totals (project, {NAMES}) "
               f"SELECT project, {_sums('', 'crawl_stats')} GROUP BY project")


def downgrade() -> None:
    bind = op.get_bind()
    for name, _event, _transition in PG_TRIGGERS:
        if bind.dialect.name == "postgresql":
            op.execute(f"DROP TRIGGER IF EXISTS {name} ON crawl_stats")
            op.execute(f"DROP FUNCTION IF EXISTS {name}()")
        else:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.drop_table("project_stat_deltas")
    op.drop_table("project_stat_totals")
