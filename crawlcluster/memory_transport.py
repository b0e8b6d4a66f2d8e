"""The embedded crawl's in-memory broker transport: kombu's, with a consumer that sleeps until
a message is put instead of polling.

kombu's virtual transports poll: when every queue is empty the consumer sleeps
``polling_interval`` and looks again. The embedded crawl had it at 5 ms so that a page's hop
from one stage to the next cost no more; 200 looks a second over four queues, each an
``Empty`` raised and caught, cost CPU for as long as the crawl ran (4-5% of a small-page
crawl's CPU, more per page the slower the machine). Here a put (any channel of this
transport class: the scheduler's publisher and the worker's own sends) wakes the consumer
at once (and so does an ack, which frees a place under the prefetch limit), so the consumer
waits until a message arrives or its drain timeout passes.
"""

from __future__ import annotations

import socket
import threading
from queue import Empty
from time import monotonic
from typing import Any

from kombu.transport import memory

# the longest a consumer sleeps when it was given no timeout (a put that bypassed this class,
# such as one through kombu's own memory transport, is seen after at most this long)
IDLE_WAIT_SECONDS = 0.5


class _Arrivals:
    """A counter of puts and a condition to wait on it: a consumer that found every queue
    empty sleeps only while no put happened since it looked (nothing is missed between the
    look and the wait), and every waiting consumer wakes."""

    def __init__(self) -> None:
        self.condition = threading.Condition()
        self.count = 0

    def note(self) -> None:
        with self.condition:
            self.count += 1
            self.condition.notify_all()

    def wait(self, seen: int, seconds: float) -> None:
        with self.condition:
            if self.count == seen:
                self.condition.wait(seconds)


_arrivals = _Arrivals()


class Channel(memory.Channel):
    """kombu's memory channel (the same queues), telling waiting consumers of each put, and
    of each ack or reject: a consumer at its prefetch limit finds "empty" until one frees a
    place."""

    def basic_ack(self, delivery_tag: Any, multiple: bool = False) -> None:
        super().basic_ack(delivery_tag, multiple)
        _arrivals.note()

    def basic_reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        super().basic_reject(delivery_tag, requeue)
        _arrivals.note()

    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:
        super()._put(queue, message, **kwargs)
        _arrivals.note()

    def _put_fanout(self, exchange: str, message: Any, routing_key: str | None = None, **kwargs: Any) -> None:
        super()._put_fanout(exchange, message, routing_key, **kwargs)
        _arrivals.note()


class Transport(memory.Transport):
    """kombu's memory transport whose ``drain_events`` waits for a put."""

    Channel = Channel

    # kombu's stubs give its two base classes different signatures; this is the virtual one
    def drain_events(self, connection: Any, timeout: Any = None) -> Any:  # type: ignore[override]
        """Deliver one message; raise ``socket.timeout`` when none came within ``timeout``
        (kombu's virtual transport contract, without its polling sleep)."""
        started = monotonic()
        cycle = self.cycle
        assert cycle is not None  # set when the transport is made
        while True:
            seen = _arrivals.count
            try:
                cycle.get(self._deliver, timeout=timeout)
                return
            except Empty:
                pass
            if timeout is None:
                _arrivals.wait(seen, IDLE_WAIT_SECONDS)
                continue
            left = timeout - (monotonic() - started)
            if left <= 0:
                raise socket.timeout()
            _arrivals.wait(seen, left)
