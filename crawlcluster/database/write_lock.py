"""SQLite's write lock, held by an embedded crawl that stops while a page still hangs in its
worker: nothing more can be stored behind the output file's back (the page's row stays
queued for a resume).
"""

from __future__ import annotations

from typing import Any

ISOLATION_KEY = "crawlcluster.isolation_level"


def hold_write_lock(engine: Any) -> Any:
    """Take SQLite's write lock on a pooled connection and keep it; returns that connection,
    for :func:`release_write_lock`."""
    connection = engine.raw_connection()
    connection.info[ISOLATION_KEY] = connection.driver_connection.isolation_level  # for release
    connection.driver_connection.isolation_level = None  # BEGIN ourselves
    connection.driver_connection.execute("BEGIN IMMEDIATE")
    return connection


def release_write_lock(connection: Any) -> None:
    """Give the lock back; the pooled connection gets back the isolation level it had, so
    that the next user of the pool (a later crawl in this process) gets an ordinary one."""
    connection.rollback()
    connection.driver_connection.isolation_level = connection.info.pop(ISOLATION_KEY, "")
    connection.close()
