"""Noticing that the broker restarted, so the rows whose messages it lost are sent again at once.

Redis is only the transport (Postgres holds the truth): a Redis that restarts without its
data loses every message in its queues, and their rows stay ``queued`` until their
deadline (``queued_deadline_seconds``, 10 minutes by default) before the scheduler sends
them again. The leading beat asks Redis for its ``run_id`` (``INFO server``; a new one at
every start) every :data:`BROKER_CHECK_SECONDS`; when it changed, every row queued before
the change is made due again at once, so recovery takes seconds.

A Redis that kept its data (AOF or RDB) still has those messages: they then arrive
twice. That is harmless: results are keyed by task id and item index, and a row already
done is stored again with the same items; the cost is the page fetched twice.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import redis

logger = logging.getLogger(__name__)

# How often the leader asks the broker whether it restarted: one INFO command
BROKER_CHECK_SECONDS = 2.0
# A broker that does not answer within this long is down for this check (tried again later)
BROKER_CHECK_TIMEOUT_SECONDS = 1.0


class BrokerWatch:
    """Tells when the Redis broker at ``broker_url`` has restarted since it was last seen.

    ``run_id_of`` reads the broker's run id (or raises when it is unreachable); the
    default asks Redis. Brokers other than Redis (the embedded in-memory transport) are
    never watched: :meth:`restarted` is always False for them.
    """

    def __init__(self, broker_url: str, *, run_id_of: Callable[[], str] | None = None,
                 check_seconds: float = BROKER_CHECK_SECONDS) -> None:
        self.broker_url = broker_url
        self.watched = run_id_of is not None or broker_url.split("://", 1)[0] in ("redis", "rediss")
        self.check_seconds = check_seconds
        self._run_id_of = run_id_of or self._redis_run_id
        self._client: Any = None
        self.run_id: str | None = None  # the run id last seen
        self.checked_at = 0.0
        self.down_since: float | None = None  # when a check first failed, until one succeeds
        self.restarts = 0

    def _redis_run_id(self) -> str:
        if self._client is None:
            self._client = redis.Redis.from_url(
                self.broker_url, socket_timeout=BROKER_CHECK_TIMEOUT_SECONDS,
                socket_connect_timeout=BROKER_CHECK_TIMEOUT_SECONDS)
        return str(self._client.info("server")["run_id"])

    def due(self, now: float) -> bool:
        return self.watched and now - self.checked_at >= self.check_seconds

    def restarted(self, now: float) -> bool:
        """Ask the broker (when a check is due); True once per restart, at the first check
        that sees a new run id. The first run id seen is only remembered."""
        if not self.due(now):
            return False
        self.checked_at = now
        try:
            run_id = self._run_id_of()
        except Exception as exc:  # noqa: BLE001 - the broker is down: one line per outage
            if self.down_since is None:
                self.down_since = now
                logger.warning("broker unreachable (%s); will check again every %.0fs", _one_line(exc),
                               self.check_seconds)
            return False
        if self.down_since is not None:
            logger.warning("broker reachable again after %.0fs", now - self.down_since)
            self.down_since = None
        previous, self.run_id = self.run_id, run_id
        if previous is None or previous == run_id:
            return False
        self.restarts += 1
        return True


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def resend_after_restart(watch: BrokerWatch, now: float, requeue: Callable[[float], int]) -> int:
    """When ``watch`` sees the broker restarted, make every row queued before ``now`` due
    again with ``requeue(now)``; the number of rows (0 when it did not restart)."""
    if not watch.restarted(now):
        return 0
    rows = requeue(now)
    logger.warning("the broker restarted (new run id %s): %d rows queued before it are due again at once",
                   watch.run_id, rows)
    return rows
