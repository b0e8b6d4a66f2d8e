"""Page bodies between fetch and parse: on Redis, in one key per parse message, beside the message.

Why: a body inside a Celery message crosses Redis more than once. kombu base64-encodes the
message body (+33%), the LPUSH sends it, and under ``acks_late`` the consuming worker sends
the whole message back into the ``unacked`` hash (the copy that brings it back if the
worker dies): a 29 KB page cost 32 KB of Redis input on the bench site. Here the fetch task
writes the bodies of a wave once, raw bytes compressed *together* (pages of one host share
their template, so a batch compresses far better than each page alone; zstd when Python has
it, zlib otherwise) in a key that expires after ``body_key_ttl_seconds``; the message names
the key and each page's length. The parse task reads the key, and deletes it once the
pages' outcomes are on their way to store.

What stays true: a redelivered message (a killed worker, ``task_reject_on_worker_lost``)
finds its key, which is deleted only after a parse that finished; a Redis restarted empty
lost the message too, and the scheduler sends the rows again; a message whose key is gone
(expired, or a Redis restored from an older snapshot) leaves its rows queued with that
sentence, and the scheduler sends them again at their deadline. A transport that is not
Redis (the embedded memory transport) keeps each body in its page, compressed alone.
"""

from __future__ import annotations

import logging
import sys
import time
import zlib
from typing import Any, Callable, Final, Mapping

from kombu.utils.uuid import uuid

from crawlcluster import settings
from crawlcluster.messages import BODIES, BODY_LENGTH, COMPRESSED, Page, ParseMessage, compress_body

logger = logging.getLogger(__name__)

try:  # Python 3.14's zstd, or its backport (a dependency below 3.14)
    from compression import zstd as _zstd  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # pragma: no cover - depends on the Python version
    try:
        from backports import zstd as _zstd  # type: ignore[import-not-found, no-redef, unused-ignore]
    except ImportError:
        _zstd = None

ZSTD_LEVEL: Final = 3  # zstd's own default: a wave of 16 pages in about half a millisecond per page


class BodiesMissing(Exception):
    """The key holding a parse message's bodies is gone (expired, or Redis lost it)."""


def redis_client(producer: Any) -> Any | None:
    """A redis-py client on ``producer``'s Redis connection pool, or None for another
    transport. A plain client (no kombu key prefix: :func:`body_key` adds the prefix),
    so every command sees the same key."""
    redis = sys.modules.get("redis")
    if redis is None:  # no Redis pool without redis-py imported: the embedded crawl need not import it
        return None
    pool = getattr(getattr(producer, "channel", None), "pool", None)
    return redis.Redis(connection_pool=pool) if isinstance(pool, redis.ConnectionPool) else None


def body_key(prefix: str) -> str:
    """A fresh key for one message's bodies, under the broker's key prefix."""
    return f"{prefix}crawlcluster.bodies.{uuid()}"


def _compress(data: bytes, level: int) -> tuple[bytes, str]:
    if level <= 0:
        return data, "raw"
    if _zstd is not None:
        return _zstd.compress(data, ZSTD_LEVEL), "zstd"
    return zlib.compress(data, level), "zlib"


def _decompress(data: bytes, codec: str) -> bytes:
    if codec == "raw":
        return data
    if codec == "zstd":
        if _zstd is None:
            raise RuntimeError("this parse message's bodies are zstd-compressed and this Python has no zstd: "
                               "pip install backports.zstd (Python < 3.14)")
        return bytes(_zstd.decompress(data))
    return zlib.decompress(data)


def _with_retries(app: Any, call: Callable[[], Any]) -> Any:
    """``call`` retried on a lost Redis connection as a publish is (task_publish_retry_policy):
    a broker restart waits for the broker, about a minute at most, before the task fails."""
    import redis

    policy = app.conf.task_publish_retry_policy or {}
    retries = int(policy.get("max_retries", 3) or 0)
    interval, step = float(policy.get("interval_start", 0)), float(policy.get("interval_step", 1))
    longest = float(policy.get("interval_max", 2))
    for attempt in range(retries + 1):
        try:
            return call()
        except (redis.ConnectionError, redis.TimeoutError):
            if attempt == retries:
                raise
            time.sleep(min(interval + step * attempt, longest))
    return None  # pragma: no cover - the loop returns or raises


def stash(app: Any, producer: Any, message: ParseMessage) -> ParseMessage:
    """``message`` ready to publish: its pages' bodies (raw, as fetched) in one Redis key
    when the broker is Redis, else each compressed in its page. Pages are changed in place."""
    s = settings.current()
    pages = message["pages"]
    client = redis_client(producer) if s.body_key_ttl_seconds > 0 else None
    with_body = [p for p in pages if "body" in p and not p.get(COMPRESSED)]
    if client is None or not with_body:
        for page in with_body:
            page["body"], page[COMPRESSED] = compress_body(page["body"])
        return message
    data, codec = _compress(b"".join(p["body"] for p in with_body), s.body_compress_level)
    key = body_key(app.conf.broker_transport_options.get("global_keyprefix", ""))
    ttl = max(1, int(s.body_key_ttl_seconds))
    _with_retries(app, lambda: client.set(key, data, ex=ttl))
    for page in with_body:
        page[BODY_LENGTH] = len(page.pop("body"))
    message[BODIES] = {"key": key, "codec": codec}
    return message


def load(app: Any, message: Mapping[str, Any]) -> list[Page]:
    """The pages of ``message`` with their bodies in them (raw), read from its key when it
    has one (copies: the message itself stays as sent, for a retry to send again). Raises
    :class:`BodiesMissing` when the key is gone."""
    ref = message.get(BODIES)
    if not ref:
        return list(message["pages"])
    pages: list[Page] = [dict(p) for p in message["pages"]]  # type: ignore[misc]
    with app.producer_or_acquire() as producer:
        client = redis_client(producer)
        if client is None:
            raise BodiesMissing(f"the message's bodies are in Redis key {ref['key']}, and the broker is "
                                "not Redis")
        data = _with_retries(app, lambda: client.get(ref["key"]))
    if data is None:
        raise BodiesMissing(
            f"the fetched bodies were no longer in Redis (key {ref['key']}: expired after "
            f"body_key_ttl_seconds={settings.current().body_key_ttl_seconds:g}, or Redis lost its data)")
    raw = _decompress(data, ref.get("codec", "zlib"))
    offset = 0
    for page in pages:
        if BODY_LENGTH in page:
            length = int(page.pop(BODY_LENGTH))
            page["body"], page[COMPRESSED] = raw[offset:offset + length], False
            offset += length
    return pages


def drop(app: Any, message: Mapping[str, Any]) -> None:
    """Delete ``message``'s key: its pages' outcomes are on their way to store. A failure to
    delete is logged; the key expires anyway."""
    ref = message.get(BODIES)
    if not ref:
        return
    try:
        with app.producer_or_acquire() as producer:
            client = redis_client(producer)
            if client is not None:
                client.delete(ref["key"])
    except Exception:  # noqa: BLE001 - the key expires after body_key_ttl_seconds
        logger.warning("could not delete the bodies key %s; it expires by itself", ref["key"], exc_info=True)
