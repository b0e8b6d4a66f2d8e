"""The schema the Alembic migrations build is the schema ``crawlcluster/schema.py`` declares:
Alembic's autogenerate comparison of a freshly migrated Postgres and SQLite database against
the declared metadata finds no difference (tables, columns, types, nullability, server
defaults, indexes). A migration that forgets a change, or a declaration that forgets a
migration, fails here. Triggers are not part of that comparison: the row counters' triggers
(migration 0020) are checked by tests/test_counters.py, which counts through them.
Also the one upsert helper every INSERT ... ON CONFLICT goes through."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select, text

from crawlcluster import db
from crawlcluster.schema import metadata, project_timers, projects


def _differences(url: str) -> list[Any]:
    engine = db.get_engine(url)  # migrates to head on first use
    with engine.connect() as conn:
        opts = {"compare_type": True, "compare_server_default": True}
        context = MigrationContext.configure(conn, opts=opts)
        return [diff for diff in compare_metadata(context, metadata) if not _is_alembic_version(diff)]


def _is_alembic_version(diff: Any) -> bool:
    # Alembic's own bookkeeping table is not part of crawlcluster's schema
    return isinstance(diff, tuple) and diff[0] == "remove_table" and diff[1].name == "alembic_version"


def test_migrated_postgres_equals_the_declared_schema(pg: str) -> None:
    assert _differences(pg) == []


def test_migrated_sqlite_equals_the_declared_schema(sqlite_url: str) -> None:
    assert _differences(sqlite_url) == []


def _timers(url: str) -> dict[str, tuple[float, float | None]]:
    with db.get_engine(url).connect() as conn:
        rows = conn.execute(select(project_timers.c.name, project_timers.c.interval_seconds,
                                   project_timers.c.last_run_at))
        return {name: (interval, last) for name, interval, last in rows}


def _upsert_in_each_form(url: str) -> None:
    def row(name: str, interval: float, last: float) -> dict[str, Any]:
        return {"project": "p", "name": name, "interval_seconds": interval, "last_run_at": last,
                "created_at": 1.0}

    key = ["project", "name"]
    with db.get_engine(url).begin() as conn:
        conn.execute(db.upsert(conn, project_timers, [row("a", 10, 1), row("b", 20, 1)], key=key))
        # DO NOTHING: a known key keeps its row, a new one goes in
        stmt = db.upsert(conn, project_timers, [row("a", 99, 99), row("c", 30, 1)], key=key)
        inserted = conn.execute(stmt.returning(project_timers.c.name)).scalars().all()
        assert inserted == ["c"]
        # DO UPDATE with a mapping
        conn.execute(db.upsert(conn, project_timers, row("b", 21, 5), key=key,
                               update={"interval_seconds": 21}))
        # DO UPDATE from the rejected row, and only where the condition holds
        conn.execute(db.upsert(conn, project_timers, [row("a", 11, 7), row("c", 31, 7)], key=key,
                               update=lambda excluded: {"last_run_at": excluded.last_run_at},
                               where=project_timers.c.interval_seconds < 20))
    assert _timers(url) == {"a": (10, 7), "b": (21, 1), "c": (30, 1)}


def test_upsert_inserts_skips_updates_and_copies_from_the_rejected_row_on_postgres(pg: str) -> None:
    _upsert_in_each_form(pg)


def test_upsert_inserts_skips_updates_and_copies_from_the_rejected_row_on_sqlite(sqlite_url: str) -> None:
    _upsert_in_each_form(sqlite_url)


def _project_from_before_the_guard(url: str) -> None:
    """A database at migration 0017 holding a project submitted before start_hosts existed."""
    from alembic import command
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as conn:
        command.upgrade(db._alembic_config(conn), "0017")
        conn.execute(text("INSERT INTO projects (name, spider, status, settings, created_at, updated_at) "
                          "VALUES ('intranet', 'crawlcluster.spider:LinkSpider', 'running', :s, 1, 1)"),
                     {"s": '{"spider_kwargs": {}}'})
        rows = [("a", "http://wiki.corp/", 0, "parse"), ("b", "https://[::1]:8443/x", 0, "parse"),
                ("c", "http://wiki.corp/robots.txt", 0, "__robots__"),
                ("d", "http://other.corp:81/", 1, "parse")]
        for task_id, task_url, depth, callback in rows:
            conn.execute(text(
                "INSERT INTO crawl_tasks (task_id, project, url, host, status, depth, callback, next_run_at, "
                "created_at, updated_at) VALUES (:i, 'intranet', :u, 'h', 'pending', :d, :c, 0, 1, 1)"),
                {"i": task_id, "u": task_url, "d": depth, "c": callback})
    engine.dispose()


def _start_hosts_after_upgrade(url: str) -> list[str]:
    engine = db.get_engine(url)  # migrates to head
    with engine.connect() as conn:
        settings = conn.execute(select(projects.c.settings).where(projects.c.name == "intranet")).scalar_one()
    return settings["start_hosts"]


def test_an_upgrade_gives_old_projects_their_start_hosts_on_sqlite(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    _project_from_before_the_guard(url)
    assert _start_hosts_after_upgrade(url) == ["[::1]:8443", "wiki.corp:80"]


def test_an_upgrade_gives_old_projects_their_start_hosts_on_postgres(pg_unmigrated) -> None:
    _project_from_before_the_guard(pg_unmigrated)
    assert _start_hosts_after_upgrade(pg_unmigrated) == ["[::1]:8443", "wiki.corp:80"]


def _migrated_sqlite_script(path: Path) -> str:
    """The head script's text for a SQLite file made by running every migration."""
    engine = db.make_engine(f"sqlite:///{path}")
    try:
        db.init_db(engine, from_script=False)
        with engine.connect() as conn:
            statements = db.sqlite_schema_statements(conn)
            tables = conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'table' "
                                       "AND name NOT LIKE 'sqlite_%'")).scalars().all()
            # a new database holds no rows but Alembic's: the script makes no rows either
            assert {name: conn.execute(text(f'SELECT count(*) FROM "{name}"')).scalar()
                    for name in tables} == {name: int(name == "alembic_version") for name in tables}
    finally:
        engine.dispose()
    head = db.migration_head()
    assert head is not None
    return f"-- revision {head}\n" + "".join(f"{statement};\n\n" for statement in statements)


def test_the_sqlite_head_script_is_what_the_migrations_make(tmp_path: Path) -> None:
    """A new SQLite file is made by crawlcluster/migrations/sqlite_head.sql and stamped at the
    head: the script must hold exactly what running every migration leaves in sqlite_master
    (rewrite it with `python -m tests.test_schema` after adding a migration)."""
    expected = _migrated_sqlite_script(tmp_path / "migrated.db")
    assert db.SQLITE_HEAD_SCRIPT.read_text(encoding="utf-8") == expected, \
        "crawlcluster/migrations/sqlite_head.sql is out of date: run `python -m tests.test_schema`"
    # and a file made by the script has that schema, stamped at the head
    engine = db.make_engine(f"sqlite:///{tmp_path / 'scripted.db'}")
    try:
        db.init_db(engine)
        with engine.connect() as conn:
            made = f"-- revision {db.migration_head()}\n" + "".join(
                f"{statement};\n\n" for statement in db.sqlite_schema_statements(conn))
            stamp = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            assert stamp == db.migration_head()
    finally:
        engine.dispose()
    assert made == expected


def test_the_head_read_from_the_migration_files_is_alembics(tmp_path: Path) -> None:
    from alembic.script import ScriptDirectory
    from sqlalchemy import create_engine

    engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.connect() as conn:
        assert db.migration_head() == ScriptDirectory.from_config(db._alembic_config(conn)).get_current_head()
    engine.dispose()


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        script = _migrated_sqlite_script(Path(scratch) / "migrated.db")
    db.SQLITE_HEAD_SCRIPT.write_text(script, encoding="utf-8")
    print(f"wrote {db.SQLITE_HEAD_SCRIPT}")
