"""Publishing stage messages: each with a readable ``argsrepr`` (what Flower shows), one at a
time with :func:`send` or many per broker round trip with :class:`BatchPublisher` (the
scheduler's). Which task a message goes to is :mod:`crawlcluster.stages`; what it holds is
:mod:`crawlcluster.messages`."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from celery.signals import before_task_publish
from kombu.utils.uuid import uuid

# Flower's summary of a batch: the project, the count and the first URLs. It rides in the
# message's headers (twice on Redis: the queue and the unacked copy) and in the task-received
# event, so it is kept short: a few URLs, not every one.
ARGSREPR_MAX_CHARS = 240


def describe_message(message: Mapping[str, Any], max_chars: int = ARGSREPR_MAX_CHARS) -> str:
    """A short readable summary of a stage message, for ``send_task(..., argsrepr=...)``.

    Flower shows a task's ``argsrepr``. Without one Celery writes a repr of the whole
    message cut at 1024 characters, so a parse message shows one URL and then compressed
    body bytes. This names the project and the URLs of the batch that fit in ``max_chars``:
    ``"example: 16 URLs: https://example.com/a, https://example.com/b, ... (+3 more)"``.
    """
    if "tasks" not in message and "pages" not in message:  # a hook message: its few fields
        fields = ", ".join(f"{key}={value!r}" for key, value in message.items() if key != "project")
        return f"{message.get('project', '?')}: {fields}"[:max_chars]
    entries = message.get("tasks") if "tasks" in message else message.get("pages")
    entries = entries if isinstance(entries, list) else []
    urls = [str(e.get("url", "?")) for e in entries if isinstance(e, dict)]
    head = f"{message.get('project', '?')}: {len(urls)} URL{'' if len(urls) == 1 else 's'}"
    text = head + (": " if urls else "")
    whole = text + ", ".join(urls)
    if len(whole) + len(f" (+{len(urls)} more)") <= max_chars:  # fits, with room for any tail below
        return whole
    for shown, url in enumerate(urls):
        rest = len(urls) - shown
        tail = f" (+{rest} more)"
        piece = ("" if shown == 0 else ", ") + url
        if len(text) + len(piece) + (len(tail) if rest > 1 else 0) > max_chars:
            return text + ("" if shown == 0 else ",") + tail
        text += piece
    return text


def send(app: Any, task_name: str, message: Mapping[str, Any], producer: Any = None) -> None:
    """Publish one stage message with a readable ``argsrepr`` (what Flower shows)."""
    app.send_task(task_name, args=[message], argsrepr=describe_message(message), producer=producer)


@before_task_publish.connect(weak=False)
def _argsrepr_in_headers_only(properties: dict[str, Any] | None = None, **_kw: Any) -> None:
    """``send_task(argsrepr=...)`` puts the text in the message's headers (where workers
    and Flower read it) and, as an unknown option, in its properties too: a second copy on
    every message. The copy in the properties is dropped before the message is published."""
    if properties is not None:
        properties.pop("argsrepr", None)


class BatchPublisher:
    """Publishes many stage messages with one broker round trip.

    ``app.send_task`` pays a broker round trip and a few hundred microseconds of Python for
    every message; at thousands of URLs per second the scheduler spends its ticks there.
    For each task name this asks Celery's own protocol-2 builder
    (``app.amqp.create_task_message``) once for a message, and then gives every message
    those headers and properties with its own id, root id, correlation id and ``argsrepr``:
    what a worker and Flower get from ``send_task``. It routes each task name once and
    publishes inside kombu's ``Producer.batch()``, which on Redis buffers the LPUSHes and
    sends them in one pipeline. Transports without batch support (the embedded memory
    transport) publish one by one. Celery's before/after_task_publish signals are not sent
    for these messages.
    """

    def __init__(self, app: Any, batch_size: int = 500) -> None:
        self.app = app
        self.batch_size = batch_size
        self._routes: dict[str, tuple[Any, dict[str, Any], dict[str, Any]]] = {}

    def route(self, task_name: str) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        """(queue, message embed, publish options) of ``task_name``, resolved as send_task
        does; the options hold the exchange, routing key and the template's headers."""
        route = self._routes.get(task_name)
        if route is None:
            options = self.app.amqp.router.route({}, task_name, None, None)
            queue = options["queue"]
            if queue.exchange is None or queue.exchange.type == "direct":
                # the default exchange: the routing key names the queue
                exchange, routing_key = "", queue.name
            else:
                exchange, routing_key = queue.exchange.name, queue.routing_key or queue.name
            template = self.app.amqp.create_task_message(
                "", task_name, [], {}, reply_to=self.app.thread_oid, argsrepr="",
                ignore_result=None,  # as send_task passes it
            )
            conf = self.app.conf
            publish_options = {
                "exchange": exchange, "routing_key": routing_key,
                "serializer": conf.task_serializer, "compression": conf.task_compression,
                "delivery_mode": queue.exchange.delivery_mode if queue.exchange is not None else None,
                "headers": template.headers, **template.properties,
            }
            route = self._routes[task_name] = (queue, template.body[2], publish_options)
        return route

    def publish(self, messages: Iterable[tuple[str, Mapping[str, Any]]]) -> int:
        """Send ``(task name, message)`` pairs; returns how many were sent."""
        sent = 0
        with self.app.producer_or_acquire() as producer:
            declared: set[str] = set()
            with producer.batch(max_size=self.batch_size):
                for task_name, message in messages:
                    queue, embed, template = self.route(task_name)
                    if queue.name not in declared:
                        producer.maybe_declare(queue)
                        declared.add(queue.name)
                    task_id = uuid()
                    headers = {**template["headers"], "id": task_id, "root_id": task_id,
                               "argsrepr": describe_message(message)}
                    producer.publish(([message], {}, embed), **{**template, "headers": headers,
                                                                "correlation_id": task_id})
                    sent += 1
        return sent
