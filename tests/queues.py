"""Test helpers on the cluster's Redis and sockets: the fetch queue's messages taken off it,
and a local port nothing listens on."""

from __future__ import annotations

import socket
from typing import Any

from celery import Celery


def raw_fetch_messages(app: Celery, timeout: float = 0.5) -> list[Any]:
    """The fetch queue's messages, undecoded (headers and properties included), taken off
    it; stops once the queue has been empty for ``timeout`` seconds."""
    out = []
    with app.connection() as connection:
        queue = connection.SimpleQueue("fetch", accept=["msgpack"])
        try:
            while True:
                try:
                    message = queue.get(block=True, timeout=timeout)
                except queue.Empty:
                    return out
                out.append(message)
                message.ack()
        finally:
            queue.close()


def fetch_messages(app: Celery, timeout: float = 0.5) -> list[dict]:
    """The stage messages waiting in the fetch queue (taken off it)."""
    return [message.decode()[0][0] for message in raw_fetch_messages(app, timeout)]


def free_port() -> int:
    """A port nothing listens on: bound, then closed, so a connection to it is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
