"""The schema the Alembic migrations build is the schema ``crawlcluster/schema.py`` declares:
Alembic's autogenerate comparison of a freshly migrated Postgres and SQLite database against
the declared metadata finds no difference (tables, columns, types, nullability, server
defaults, indexes). A migration that forgets a change, or a declaration that forgets a
migration, fails here."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from crawlcluster import db
from crawlcluster.schema import metadata


def _differences(url: str) -> list[Any]:
    engine = db.get_engine(url)  # migrates to head on first use
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        return [diff for diff in compare_metadata(context, metadata) if not _is_alembic_version(diff)]


def _is_alembic_version(diff: Any) -> bool:
    # Alembic's own bookkeeping table is not part of crawlcluster's schema
    return isinstance(diff, tuple) and diff[0] == "remove_table" and diff[1].name == "alembic_version"


def test_migrated_postgres_equals_the_declared_schema(pg: str) -> None:
    assert _differences(pg) == []


def test_migrated_sqlite_equals_the_declared_schema(sqlite_url: str) -> None:
    assert _differences(sqlite_url) == []
