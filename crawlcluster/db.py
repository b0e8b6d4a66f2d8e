"""Database engines, one per process, and schema creation through Alembic (a new SQLite file
from the script the migrations amount to).

Engines are created lazily and again after a fork (prefork parse workers must not share
their parent's connections). SQLite, used by the embedded crawl, gets WAL mode and a busy
timeout so the worker threads and the scheduler can share one file.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Union

from sqlalchemy import Table, create_engine, event, inspect, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.engine.url import URL
from sqlalchemy.exc import DisconnectionError, OperationalError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from crawlcluster import settings
from crawlcluster.errors import ConfigurationError

logger = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")
_lock = threading.Lock()
_engines: dict[tuple[int, str], Engine] = {}
# databases whose schema this process (or the parent it was forked from) found up to date
_schema_ready: set[str] = set()


def normalize_database_url(url: str) -> str:
    # postgresql:// and postgres:// mean psycopg2, the driver we ship
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_engine(url: str) -> Engine:
    url = normalize_database_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                               pool_size=10, max_overflow=10)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    engine = create_engine(url, pool_size=5, max_overflow=10)
    _ping_when_idle(engine, settings.current().database_ping_idle_seconds)
    return engine


def _ping_when_idle(engine: Engine, idle_seconds: float) -> None:
    """Check a pooled connection with a round trip before use only when it sat idle in the
    pool ``idle_seconds`` or longer (``database_ping_idle_seconds``).

    SQLAlchemy's ``pool_pre_ping`` pings on every checkout: a round trip per transaction, five
    per parse message on small pages. A connection used a moment ago is alive unless the
    server went away in between; then its first statement raises a disconnect error,
    SQLAlchemy invalidates the whole pool, and the task is retried
    (:func:`crawlcluster.app.database_outage_retry`) on fresh connections. A connection idle
    for longer (a quiet worker, the server restarted meanwhile) is pinged and replaced if dead,
    as before."""

    def checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["crawlcluster_idle_since"] = time.monotonic()

    def checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("crawlcluster_idle_since")
        if since is None or time.monotonic() - since < idle_seconds:
            return  # new, or used a moment ago
        try:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute("SELECT 1")
            finally:
                cursor.close()
        except Exception as exc:  # noqa: BLE001 - any failure here means: not usable
            idle = time.monotonic() - since
            raise DisconnectionError(f"a pooled connection idle {idle:.0f}s is dead: {exc}") from exc

    event.listen(engine, "checkin", checkin)
    event.listen(engine, "checkout", checkout)


def get_engine(url: str | None = None, *, ensure_schema: bool = True) -> Engine:
    """This process's engine for ``url`` (default: the database_url setting), with the
    schema brought up to date on first use."""
    url = normalize_database_url(url or settings.current().database_url)
    key = (os.getpid(), url)
    engine = _engines.get(key)
    if engine is None:
        with _lock:
            engine = _engines.get(key)
            if engine is None:
                engine = make_engine(url)
                _engines[key] = engine
    if ensure_schema and url not in _schema_ready:
        with _lock:
            if url not in _schema_ready:
                init_db(engine)
                _schema_ready.add(url)
    return engine


def check_schema(url: str | None = None) -> None:
    """Bring the schema of ``url`` up to date once per process tree, on an engine of its own
    that is closed afterwards: a worker calls it before forking its pool, so no child pays
    for Alembic again and none inherits a connection."""
    url = normalize_database_url(url or settings.current().database_url)
    if url in _schema_ready:
        return
    with _lock:
        if url not in _schema_ready:
            engine = make_engine(url)
            try:
                init_db(engine)
            finally:
                engine.dispose()
            _schema_ready.add(url)


def dispose_all() -> None:
    """Close this process's engines (tests, and the end of an embedded crawl)."""
    with _lock:
        for (pid, _url), engine in list(_engines.items()):
            if pid == os.getpid():
                engine.dispose()
        _engines.clear()
        _schema_ready.clear()


def _alembic_config(connection):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


# a new SQLite file is made by running this script (the statements the migrations leave in
# sqlite_master, tests/test_schema.py checks they are the same) instead of every migration
SQLITE_HEAD_SCRIPT = MIGRATIONS / "sqlite_head.sql"
_REVISION = re.compile(r"""^revision\s*(?::[^=]*)?=\s*["'](\w+)["']""", re.M)
_DOWN_REVISION = re.compile(r"""^down_revision\s*(?::[^=]*)?=\s*(?:["'](\w+)["']|None)""", re.M)
_heads: dict[str, str | None] = {}


def migration_head() -> str | None:
    """The newest migration's revision, read from the migration files without importing
    Alembic (which imports Mako and Pygments, a tenth of a second of every process's start);
    None when the files do not name exactly one head (Alembic is asked then)."""
    if "head" not in _heads:
        revisions: set[str] = set()
        parents: set[str] = set()
        for path in (MIGRATIONS / "versions").glob("[0-9]*.py"):
            source = path.read_text(encoding="utf-8")
            revision, down = _REVISION.search(source), _DOWN_REVISION.search(source)
            if revision is None or down is None:
                revisions.clear()
                break
            revisions.add(revision.group(1))
            if down.group(1):
                parents.add(down.group(1))
        heads = revisions - parents
        _heads["head"] = heads.pop() if len(heads) == 1 else None
    return _heads["head"]


def _current_revision(connection: Connection) -> str | None:
    if not inspect(connection).has_table("alembic_version"):
        return None
    return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def sqlite_schema_statements(connection: Connection) -> list[str]:
    """The statements that make ``connection``'s SQLite schema, in the order it was made
    (SQLite's own tables and indexes left out): the contents of :data:`SQLITE_HEAD_SCRIPT`."""
    rows = connection.execute(text("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL "
                                   "AND name NOT LIKE 'sqlite_%' ORDER BY rowid"))
    return [sql for (sql,) in rows]


def _sqlite_script(head: str) -> list[str] | None:
    """The head script's statements, when it was written for ``head``."""
    try:
        source = SQLITE_HEAD_SCRIPT.read_text(encoding="utf-8")
    except OSError:
        return None
    first, _, body = source.partition("\n")
    if first.strip() != f"-- revision {head}":
        return None
    return [statement.strip() for statement in body.split(";\n\n") if statement.strip()]


def init_db(engine: Engine, *, from_script: bool = True) -> None:
    """Create or upgrade the schema to the newest migration. Safe to call from many
    processes at once: on Postgres an advisory lock lets one migrate while others wait.
    A database already at the newest migration costs one query; an empty SQLite database
    is made by :data:`SQLITE_HEAD_SCRIPT` and stamped (unless ``from_script`` is false),
    which gives the same schema as every migration in turn, several times cheaper."""
    head = migration_head()
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(424242)"))
        current = _current_revision(connection)
        if head is not None and current == head:
            return
        if (from_script and head is not None and current is None and engine.dialect.name == "sqlite"
                and not inspect(connection).get_table_names()):
            statements = _sqlite_script(head)
            if statements is not None:
                for statement in statements:
                    connection.exec_driver_sql(statement)
                connection.execute(text("INSERT INTO alembic_version (version_num) VALUES (:v)"), {"v": head})
                return
        _upgrade(engine, connection)


def _upgrade(engine: Engine, connection: Connection) -> None:
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    config = _alembic_config(connection)
    head = ScriptDirectory.from_config(config).get_current_head()
    current = MigrationContext.configure(connection).get_current_revision()
    if current == head:
        return
    logger.info("migrating %s from %s to %s", engine.url.render_as_string(hide_password=True),
                current, head)
    command.upgrade(config, "head")


Values = Union[Mapping[str, Any], Sequence[Mapping[str, Any]]]
Changes = Union[Mapping[str, Any], Callable[[Any], Mapping[str, Any]]]


def upsert(conn: Connection | Engine, table: Table, values: Values, *, key: Sequence[str],
           update: Changes | None = None, where: Any = None) -> Any:
    """``INSERT ... ON CONFLICT (key) DO UPDATE SET update [WHERE where]`` for ``table``,
    or ``DO NOTHING`` when ``update`` is None, in the dialect of ``conn`` (Postgres and SQLite
    spell it the same, but SQLAlchemy builds it from each dialect's own ``insert``), for one
    row. Many rows go through :func:`upsert_rows_statement` and :func:`execute_rows` instead: a
    statement built with ``.values(list)`` is compiled again every time it is executed.

    ``update`` is a mapping of column to new value, or a function that receives the
    statement's ``excluded`` row (the values that did not go in) and returns that mapping,
    for upserts that add to or copy from the rejected row. The statement is returned
    unexecuted so that the caller can add ``.returning(...)``."""
    stmt = upsert_statement(conn.dialect.name, table, key=key, update=update, where=where)
    return stmt.values(values if isinstance(values, Mapping) else list(values))


def upsert_statement(dialect: str, table: Table, *, key: Sequence[str], update: Changes | None = None,
                     where: Any = None) -> Any:
    """The statement of :func:`upsert` without values, in ``dialect`` (``"postgresql"`` or
    ``"sqlite"``), to be executed with a list of rows (see :func:`upsert_rows_statement`)."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(table)
    if update is None:
        return stmt.on_conflict_do_nothing(index_elements=list(key))
    changes = update(stmt.excluded) if callable(update) else update
    return stmt.on_conflict_do_update(index_elements=list(key), set_=dict(changes), where=where)


def upsert_rows_statement(dialect: str, table: Table, *, key: Sequence[str], update: Changes | None = None,
                          where: Any = None) -> Any:
    """:func:`upsert_statement` for :func:`execute_rows`. On Postgres it returns the rows'
    keys: SQLAlchemy sends an ``ON CONFLICT`` statement without RETURNING through the
    driver's ``executemany``, one round trip per row (psycopg2), and with RETURNING as pages of
    one multi-row INSERT ("insertmanyvalues"). SQLite's ``executemany`` runs in the process."""
    stmt = upsert_statement(dialect, table, key=key, update=update, where=where)
    if dialect == "postgresql":
        stmt = stmt.returning(*[table.c[name] for name in key])
    return stmt


_statements: dict[tuple[str, str], Any] = {}


def statement(conn: Connection | Engine, name: str, build: Callable[[str], Any]) -> Any:
    """The statement ``name``, built by ``build(dialect name)`` once per process and dialect.

    A statement object used again keeps its cache key (SQLAlchemy memoizes it on the object),
    so executing it looks up the compiled form without walking the statement's tree; on a
    statement of thirty ``SET`` columns that walk costs as much as the database's work."""
    cache_key = (conn.dialect.name, name)
    found = _statements.get(cache_key)
    if found is None:
        found = _statements.setdefault(cache_key, build(conn.dialect.name))
    return found


def execute_rows(conn: Connection, stmt: Any, rows: Sequence[Mapping[str, Any]]) -> None:
    """Execute ``stmt`` (a statement without values, from :func:`upsert_rows_statement`) with
    ``rows``; what it returns is dropped.

    SQLAlchemy compiles such a statement once per process and sends the rows as one
    multi-row INSERT per page of rows ("insertmanyvalues": on SQLite with RETURNING at most
    ``insertmanyvalues_max_parameters`` variables each, below SQLite's limit), or with the
    driver's ``executemany`` (SQLite without RETURNING). One execution needs the same keys in
    every row: rows that differ are executed in groups of equal keys, in the order of their
    first row, so that a column left out still takes its default."""
    groups: dict[frozenset[str], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(frozenset(row), []).append(row)
    for group in groups.values():
        conn.execute(stmt, group).close()


def table_names(engine: Engine) -> list[str]:
    return inspect(engine).get_table_names()


def open_database(url: str | None = None) -> Engine:
    """:func:`get_engine` for a command a person runs (``crawlcluster initdb``): a database
    that cannot be reached raises :class:`ConfigurationError` with a sentence that says what
    to do, instead of a driver's traceback. A missing database names the commands that
    create it, because creating it is the one step the schema migrations cannot do."""
    url = normalize_database_url(url or settings.current().database_url)
    try:
        return get_engine(url)
    except OperationalError as exc:
        raise ConfigurationError(describe_connect_failure(url, exc)) from None


def describe_connect_failure(url: str, exc: BaseException) -> str:
    """One readable message for a failed first connection to ``url``."""
    parsed = make_url(normalize_database_url(url))
    shown = parsed.render_as_string(hide_password=True)
    reason = str(getattr(exc, "orig", None) or exc).strip()
    # the driver's own words, without SQLAlchemy's "(Background on this error ...)" tail
    reason = " ".join(line.strip() for line in reason.splitlines()
                      if line.strip() and "sqlalche.me" not in line)
    if _database_is_missing(parsed, reason):
        return missing_database_message(parsed)
    return f"cannot connect to the database {shown} (CRAWLCLUSTER_DATABASE_URL): {reason}"


def missing_database_message(url: URL) -> str:
    """How to create the database ``url`` names, with its own host, port and user."""
    name = url.database or ""
    createdb = ["createdb"]
    if url.host:
        createdb += ["-h", url.host]
    if url.port and url.port != 5432:
        createdb += ["-p", str(url.port)]
    if url.username:
        createdb += ["-U", url.username]
    createdb.append(name)
    quoted = '"' + name.replace('"', '""') + '"'
    where = f"{url.host or 'localhost'}:{url.port or 5432}"
    return (f"the database {name!r} does not exist on the Postgres server at {where} "
            f"(CRAWLCLUSTER_DATABASE_URL names it). Create it, then run `crawlcluster initdb` again: "
            f"`{shlex.join(createdb)}`, or in psql: CREATE DATABASE {quoted};")


def _database_is_missing(url: URL, reason: str) -> bool:
    if url.get_backend_name() != "postgresql" or not url.database:
        return False
    if re.search(r'database "' + re.escape(url.database) + r'" does not exist', reason):
        return True
    # the server's message may be translated (lc_messages): ask its catalogue instead
    maintenance = create_engine(url.set(database="postgres"), poolclass=NullPool,
                                connect_args={"connect_timeout": 5})
    try:
        with maintenance.connect() as conn:
            found = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :name"),
                                 {"name": url.database})
            return found.first() is None
    except SQLAlchemyError:
        return False
    finally:
        maintenance.dispose()
