"""The Redis broker transport: kombu's, with a channel close that survives a lost broker.

Why it exists: when a worker loses Redis, Celery's consumer first calls
``Connection.collect()``, which closes the channels (a channel in a BRPOP fails half-way
with a ConnectionError, which is ignored) and detaches the transport from its connection
(``transport.client = None``), but leaves the connection's default channel in place. It
then calls ``connection.close()``, which closes that channel a second time. The second close
tries to restore the channel's unacknowledged messages, which builds a new connection pool
from ``transport.client.hostname``: ``AttributeError: 'NoneType' object has no attribute
'hostname'``. That is not a connection error, so nothing ignores it and the worker exits
with "Unrecoverable error" (kombu 5.7, celery 5.7; kombu issue #582 shows the same
teardown path). Whether the first close fails half-way depends on whether the channel
was inside a BRPOP at the moment Redis went, hence "5 runs of 6". A second path ends the
same way: a task that was running while the connection was replaced finishes and
acknowledges its message on the old, closed channel (``channel.connection`` is None), and
the acknowledgement builds a pool from it (``AttributeError: ... no attribute 'client'``).

:class:`Channel` closes such a channel without the broker, and drops acknowledgements and
rejections of its messages: there is nothing to reach the broker with. The messages it
held are not lost: with Redis's data kept they stay in the unacked hash until the
visibility timeout; with the data gone, the scheduler sends their rows again (it notices
the restart, :mod:`crawlcluster.dispatch.broker_watch`).

``celeryconfig.py`` names :class:`Transport` as ``broker_transport`` for ``redis://`` and
``rediss://`` broker URLs only.
"""

from __future__ import annotations

import logging
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

logger = logging.getLogger(__name__)


class Channel(kombu_redis.Channel):
    """A Redis channel whose close, acks and rejects never need a connection that is gone."""

    @property
    def detached(self) -> bool:
        """Whether this channel's connection is gone: closed, or its transport detached."""
        return self.connection is None or self.connection.client is None

    def basic_ack(self, delivery_tag: Any, multiple: bool = False) -> None:
        if self.detached:
            # delivered on a connection that is gone: the broker that holds it (if it kept
            # its data) delivers it again after the visibility timeout
            logger.info("message %s came on a lost broker connection: not acknowledged", delivery_tag)
            return
        super().basic_ack(delivery_tag, multiple)

    def basic_reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        if self.detached:
            logger.info("message %s came on a lost broker connection: not rejected", delivery_tag)
            return
        super().basic_reject(delivery_tag, requeue)

    def close(self) -> None:
        transport = self.connection
        if transport is None or transport.client is not None or self.closed:
            super().close()
            return
        # The transport left its connection (Connection.collect() after the broker went):
        # release the sockets and forget the channel, without a round trip to Redis.
        self._in_poll = False  # the BRPOP's socket went with the broker
        self._qos = None  # nothing to restore the unacked messages with (see the module docstring)
        try:
            super().close()
        except transport.connection_errors:
            # deleting auto-delete fanout queues needs Redis; finish the close locally
            self._disconnect_pools()
            self._close_clients()
            virtual.Channel.close(self)
        logger.debug("closed a channel of a lost broker connection without restoring its messages")


class Transport(kombu_redis.Transport):
    """kombu's Redis transport, with :class:`Channel`."""

    Channel = Channel
