"""Noticing that the broker restarted, so the rows whose messages it lost are sent again at once.

Redis is only the transport (Postgres holds the truth): a Redis that restarts without its
data loses every message in its queues, and their rows stay ``queued`` until their
deadline (``queued_deadline_seconds``, 10 minutes by default) before the scheduler sends
them again. The leading beat asks Redis for its ``run_id`` (``INFO server``; a new one at
every start) every :data:`BROKER_CHECK_SECONDS`; when it changed, every row queued before
the change is made due again at once, so recovery takes seconds.

The run id the leader last saw is kept in the lease row (``scheduler_lease.broker_run_id``)
and a new leader starts from it: a beat started, or a standby that took the lease, after
Redis restarted still sees the restart at its first check. Only the very first leader
(nothing stored) has nothing to compare with; it stores what it sees.

A Redis that kept its data (AOF or RDB) still has those messages: they then arrive
twice. That is harmless: each message carries the dispatch it was sent under
(:data:`crawlcluster.messages.DISPATCH`), and a stage drops a message whose rows are done
or were sent again since before doing any work (no fetch, no count); the cost is at most a
page whose first message was already being fetched.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

logger = logging.getLogger(__name__)

# How often the leader asks the broker whether it restarted: one INFO command
BROKER_CHECK_SECONDS = 2.0
# A broker that does not answer within this long is down for this check (tried again later)
BROKER_CHECK_TIMEOUT_SECONDS = 1.0


class BrokerWatch:
    """Tells when the Redis broker at ``broker_url`` has restarted since it was last seen
    (by this process, or by a former leader: ``remembered``, :meth:`start_from`).

    ``run_id_of`` reads the broker's run id (or raises when it is unreachable); the
    default asks Redis. Brokers other than Redis (the embedded in-memory transport) are
    never watched: :meth:`restarted` is always False for them.
    """

    def __init__(self, broker_url: str, *, run_id_of: Callable[[], str] | None = None,
                 check_seconds: float = BROKER_CHECK_SECONDS, remembered: str | None = None) -> None:
        self.broker_url = broker_url
        self.watched = run_id_of is not None or broker_url.split("://", 1)[0] in ("redis", "rediss")
        self.check_seconds = check_seconds
        self._run_id_of = run_id_of or self._redis_run_id
        self._client: Any = None
        self.run_id: str | None = remembered  # the run id last seen (by this process or a former leader)
        self.remembered = remembered  # the run id last stored, where the next leader starts from
        self.checked_at = 0.0
        self.down_since: float | None = None  # when a check first failed, until one succeeds
        self.restarts = 0

    def _redis_run_id(self) -> str:
        if self._client is None:
            import redis  # here: the embedded crawl, which never asks, does not pay for importing it

            self._client = redis.Redis.from_url(
                self.broker_url, socket_timeout=BROKER_CHECK_TIMEOUT_SECONDS,
                socket_connect_timeout=BROKER_CHECK_TIMEOUT_SECONDS)
        return str(self._client.info("server")["run_id"])

    def start_from(self, remembered: str | None) -> None:
        """Compare the next run id with ``remembered`` (the one a former leader stored, read
        when this process takes the lease) instead of with whatever this process saw last."""
        self.run_id = self.remembered = remembered

    def due(self, now: float) -> bool:
        return self.watched and now - self.checked_at >= self.check_seconds

    @property
    def unremembered(self) -> str | None:
        """The run id last seen when it differs from the one stored, else None."""
        return self.run_id if self.run_id is not None and self.run_id != self.remembered else None

    def restarted(self, now: float) -> bool:
        """Ask the broker (when a check is due); True once per restart, at the first check
        that sees a new run id. With nothing seen nor remembered the first run id is only
        kept (:attr:`unremembered` tells that it is still to be stored)."""
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


def resend_after_restart(watch: BrokerWatch, now: float,
                         record: Callable[[str, float | None], int]) -> int:
    """When ``watch`` sees the broker restarted, make every row queued before ``now`` due
    again; the number of rows (0 when it did not restart).

    ``record(run_id, before)`` stores the run id seen and, when ``before`` is not None,
    makes the rows queued before it due again, in one transaction; it is called while the
    run id seen differs from the one stored. A restart is a run id that differs from the one
    stored (not merely from the last one seen), so a ``record`` that failed (the lease lost,
    the database away) is tried again at the next check instead of the restart being missed.
    """
    watch.restarted(now)
    run_id = watch.unremembered
    if run_id is None:
        return 0
    restarted = watch.remembered is not None
    rows = record(run_id, now if restarted else None)
    watch.remembered = run_id
    if restarted:
        logger.warning("the broker restarted (new run id %s): %d rows queued before it are due again at once",
                       run_id, rows)
    return rows
