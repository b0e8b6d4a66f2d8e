"""Celery settings for crawlcluster, read from the environment through crawlcluster.settings.

One queue per stage (fetch, render, parse, store), each task routed to its own queue, both
derived from crawlcluster.stages; late acknowledgement so a killed worker's messages are
delivered again, msgpack so page bodies travel as bytes, and the frontier scheduler as beat's scheduler class.
"""

from kombu import Queue

from crawlcluster import settings, stages

broker_url = settings.get("broker_url")
if broker_url.split("://", 1)[0] in ("redis", "rediss"):
    # kombu's Redis transport with a channel close that survives a lost broker (a worker
    # exited with "Unrecoverable error" when Redis restarted; see crawlcluster/transport.py)
    broker_transport = "crawlcluster.transport:Transport"
    # message bodies zlib-compressed before kombu base64-encodes them for Redis: a batch's
    # entries repeat their keys and URL prefixes, and every message crosses Redis twice (the
    # queue, then the unacked copy under acks_late). Page bodies travel beside the messages
    # (crawlcluster/bodies.py). The embedded memory transport copies nothing and skips this.
    task_compression = "zlib"
broker_connection_retry_on_startup = True
# A broker outage is an outage, not a death: a worker tries to reconnect for as long as it
# runs (Celery's default gives up after 100 attempts, about 30 minutes, and exits).
broker_connection_retry = True
broker_connection_max_retries = None
# A task sending its results on while the broker is away waits for it, up to about a
# minute (0, 1, 2, 2, ... s; Celery's default gives up after 3 tries, about 3 s); after
# that the task fails and the scheduler sends its rows again.
task_publish_retry_policy = {"max_retries": 30, "interval_start": 0, "interval_step": 1, "interval_max": 2}
# Redis redelivers an unacked message after this long; the scheduler's own deadline
# (queued_deadline_seconds) is shorter and is what recovers lost work.
broker_transport_options = {"visibility_timeout": 3600}
if settings.get("broker_key_prefix"):
    broker_transport_options["global_keyprefix"] = settings.get("broker_key_prefix")

# one queue per stage; each task to its stage's queue, the spider hooks to parse's
task_queues = [Queue(name) for name in stages.QUEUES]
task_default_queue = stages.FETCH.queue
task_routes = stages.task_routes()

task_serializer = "msgpack"
accept_content = ["msgpack", "json"]
result_serializer = "json"
task_ignore_result = True
result_backend = None

task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
worker_send_task_events = True
# Flower shows a task's argsrepr. Celery's default stops at 3 levels, which turns every
# message into "[{'project': ..., 'tasks': [{...}]}]"; one level more shows the batch's
# entries, so the first URLs are readable (the repr is still cut at 1024 characters).
task_repr_maxlevels = 4
task_send_sent_event = False

beat_scheduler = "crawlcluster.dispatch.beat:CrawlScheduler"
beat_max_loop_interval = 5
timezone = "UTC"
