"""The embedded crawl's in-memory transport: a consumer waiting on empty queues receives a
message put from another thread, and a wait with nothing put ends in ``socket.timeout``."""

from __future__ import annotations

import socket
import threading

import pytest
from kombu import Connection, Exchange, Producer, Queue

TRANSPORT = "crawlcluster.memory_transport:Transport"


def test_a_waiting_consumer_receives_a_message_put_by_another_thread_and_an_empty_wait_times_out():
    queue = Queue("memory-transport-test", Exchange("memory-transport-test", type="direct"),
                  routing_key="memory-transport-test")
    received: list[dict] = []
    with Connection("memory://localhost/", transport=TRANSPORT) as consumer_conn, \
            Connection("memory://localhost/", transport=TRANSPORT) as producer_conn:
        with consumer_conn.Consumer([queue], callbacks=[lambda body, message: (received.append(body),
                                                                               message.ack())]):
            with pytest.raises(socket.timeout):
                consumer_conn.drain_events(timeout=0.2)
            producer = Producer(producer_conn.channel())
            timer = threading.Timer(0.3, lambda: producer.publish({"n": 1}, exchange=queue.exchange,
                                                                  routing_key="memory-transport-test",
                                                                  declare=[queue]))
            timer.start()
            # a generous bound: the consumer is woken by the put, long before it
            consumer_conn.drain_events(timeout=60)
            timer.join()
    assert received == [{"n": 1}]
