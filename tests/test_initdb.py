"""`crawlcluster initdb` against the real Postgres: a database that does not exist gets a
message naming the command that creates it, and that very command makes initdb succeed;
a server that does not answer gets one sentence, never a traceback."""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
from sqlalchemy import create_engine, text

from crawlcluster import db

ROOT = Path(__file__).resolve().parent.parent


def run_initdb(database_url: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, CRAWLCLUSTER_DATABASE_URL=database_url,
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    return subprocess.run([sys.executable, "-c", "from crawlcluster.cli import main; main()", "initdb"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def missing_database(database_url: str) -> Iterator[str]:
    """A database name on the test server that does not exist (dropped again afterwards)."""
    url = f"{database_url}_missing"
    admin = create_engine(db.normalize_database_url(database_url).rpartition("/")[0] + "/postgres",
                          isolation_level="AUTOCOMMIT")
    name = url.rpartition("/")[2]
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_initdb_on_a_missing_database_says_how_to_create_it_and_the_command_works(missing_database: str,
                                                                               tmp_path: Path) -> None:
    name = missing_database.rpartition("/")[2]
    done = run_initdb(missing_database, tmp_path)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr, done.stderr
    (message,) = [line for line in done.stderr.splitlines() if line.strip()]
    assert message.startswith(f"Error: the database '{name}' does not exist "
                              "on the Postgres server at 127.0.0.1:5432")
    assert f'CREATE DATABASE "{name}";' in message
    createdb = re.search(r"`(createdb [^`]+)`", message)
    assert createdb, message
    assert createdb.group(1) == f"createdb -h 127.0.0.1 -U postgres {name}"

    # the hint is the real fix: run it as given, and initdb succeeds
    made = subprocess.run(shlex.split(createdb.group(1)), capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    done = run_initdb(missing_database, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "schema up to date" in done.stderr and "crawl_tasks" in done.stderr


def test_initdb_on_a_server_that_does_not_answer_is_one_sentence(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on: bound, never listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        done = run_initdb(f"postgresql://postgres@127.0.0.1:{port}/crawlcluster", tmp_path)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "sqlalche.me" not in done.stderr, done.stderr
    (message,) = [line for line in done.stderr.splitlines() if line.strip()]
    assert message.startswith("Error: cannot connect to the database "
                              f"postgresql+psycopg2://postgres@127.0.0.1:{port}/"
                              "crawlcluster (CRAWLCLUSTER_DATABASE_URL): ")
    assert "Connection refused" in message
