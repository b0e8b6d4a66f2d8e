"""Work notices: a worker's transaction tells the scheduler that it has new work, on Postgres's
LISTEN/NOTIFY, so that the scheduler wakes when rows are added (most of them due now) or
ended (a host's robots.txt known, room under a queue limit, the crawl's end), instead of
sleeping out its poll.

A notice is sent with :func:`notify_work` inside the transaction that makes the work (Postgres
delivers it at the commit, when the rows are visible, and folds the notices of one
transaction into one); the scheduler waits on a :class:`WorkListener`. A notice is a hint,
never the truth: a lost one (a listener that reconnected) costs only the poll it would have
cut short. On SQLite (the embedded crawl, one process) both are no-ops.
"""

from __future__ import annotations

import logging
import select as io_select
import time
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection, Engine

logger = logging.getLogger(__name__)

CHANNEL = "crawlcluster_work"
# a listener that cannot listen (the database away) says so at most this often
ERROR_LOG_SECONDS = 60.0


def notify_work(conn: Connection) -> None:
    """Tell a waiting scheduler, when this transaction commits, that it may have work now."""
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_notify(CHANNEL, "")))


class _NoNotices(Exception):
    """No notices here (SQLite): the wait is a plain sleep."""


class WorkListener:
    """One connection of the scheduler's own that LISTENs for work notices; opened at the
    first wait, opened again after an error (a notice lost meanwhile costs one poll)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._conn: Any = None  # the DBAPI (psycopg2) connection, in autocommit
        self._raw: Any = None  # its pool's proxy, invalidated at close
        self.enabled = engine.dialect.name == "postgresql"
        self._logged_at = 0.0

    def _open(self) -> Any:
        if self._conn is None:
            raw = self.engine.raw_connection()
            try:
                dbapi: Any = raw.driver_connection
                dbapi.autocommit = True
                with dbapi.cursor() as cursor:
                    cursor.execute(f"LISTEN {CHANNEL}")
            except BaseException:
                raw.invalidate()
                raise
            self._raw, self._conn = raw, dbapi
        return self._conn

    def wait(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for a notice; whether one came (notices that came since
        the last wait count at once). Without Postgres, or when the connection fails, sleeps
        out ``seconds`` instead (the caller's poll goes on as before)."""
        started = time.monotonic()
        try:
            if not self.enabled:
                raise _NoNotices
            conn = self._open()
            if self._drain(conn):
                return True
            if seconds > 0 and io_select.select([conn], [], [], seconds)[0]:
                return self._drain(conn)
            return False
        except _NoNotices:
            pass
        except Exception as exc:  # noqa: BLE001 - a hint only: the poll still finds the work
            if time.monotonic() - self._logged_at >= ERROR_LOG_SECONDS:
                self._logged_at = time.monotonic()
                logger.warning("work notices unavailable (%s: %s); the scheduler polls", type(exc).__name__,
                               str(exc).strip().splitlines()[0] if str(exc).strip() else "")
            self.close()
        time.sleep(max(0.0, seconds - (time.monotonic() - started)))
        return False

    @staticmethod
    def _drain(conn: Any) -> bool:
        conn.poll()
        found = bool(conn.notifies)
        conn.notifies.clear()
        return found

    def close(self) -> None:
        if self._conn is not None:
            raw, self._conn = self._raw, None
            try:
                raw.invalidate()  # never back to the pool with a LISTEN on it
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass
