"""What the console's workers page shows: each Celery worker as Celery itself reports it (its
queues, concurrency and tasks from ``inspect``; its heartbeats and failed tasks from the
event stream), each worker process's lease on the rows it works on (its heartbeat in the
``worker_leases`` table) and each render process's browser counters (``render_workers``).

A worker that stops answering is kept and shown as silent since it was last seen, not
dropped: the console remembers every worker and lease it has seen for as long as it runs
(the scheduler's sweep deletes an expired lease's row, Celery forgets a killed worker).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from crawlcluster.database import render, worker_leases
from crawlcluster.db import get_engine
from crawlcluster.web.figures import human_bytes

logger = logging.getLogger(__name__)

# Celery is asked (a broadcast) at most this often, waiting this long for the answers
ASK_SECONDS = 5.0
REPLY_SECONDS = 1.0
# a worker whose last heartbeat event (every 2 s) or answer is older than this is silent (five
# heartbeats missed)
SILENT_SECONDS = 10.0
# the event receiver reconnects after this long when the broker went away
EVENTS_RETRY_SECONDS = 5.0


def _host_pid(name: str) -> tuple[str, int | None]:
    """``host:pid`` (a lease's or a render row's worker) split; pid None when not a number."""
    host, _, pid = name.rpartition(":")
    return (host, int(pid)) if pid.isdigit() else (name, None)


class CeleryWatch:
    """The Celery workers of the console's broker, as ``inspect`` answers (at most every
    ASK_SECONDS, one asker at a time) and as the event stream tells (a daemon thread counts
    heartbeats, tasks succeeded and failed per worker since the console started). Off on the
    embedded in-memory transport, where no worker lives outside the crawl."""

    def __init__(self, broker_url: str) -> None:
        self.watched = broker_url.split("://", 1)[0] in ("redis", "rediss")
        self.workers: dict[str, dict[str, Any]] = {}
        self.error: str | None = None
        self._lock = threading.Lock()
        self._ask_lock = threading.Lock()
        self._asked_at = 0.0
        self._events: threading.Thread | None = None

    # -- the event stream ------------------------------------------------------------------
    def _entry(self, name: str) -> dict[str, Any]:
        return self.workers.setdefault(name, {"name": name, "queues": [], "concurrency": None, "pid": None,
                                              "processes": [], "tasks": 0, "active": 0, "succeeded": 0,
                                              "failed": 0, "last_seen": None, "heartbeat_at": None,
                                              "offline": False})

    def on_event(self, event: dict[str, Any]) -> None:
        kind, name = event.get("type", ""), event.get("hostname")
        if not name:
            return
        with self._lock:
            entry = self._entry(name)
            if kind in ("worker-heartbeat", "worker-online"):
                entry.update(heartbeat_at=time.time(), last_seen=time.time(), offline=False,
                             active=int(event.get("active") or 0))
            elif kind == "worker-offline":
                entry.update(offline=True, heartbeat_at=time.time())
            elif kind == "task-succeeded":
                entry["succeeded"] += 1
            elif kind == "task-failed":
                entry["failed"] += 1

    def _listen(self) -> None:
        from crawlcluster.app import app

        while True:
            try:
                with app.connection_for_read() as conn:
                    receiver = app.events.Receiver(conn, handlers={"*": self.on_event})
                    receiver.capture(limit=None, timeout=None, wakeup=True)
            except Exception as exc:  # noqa: BLE001 - the broker away: listen again later
                logger.warning("the console lost Celery's event stream (%s); listening again in %gs",
                               exc, EVENTS_RETRY_SECONDS)
            time.sleep(EVENTS_RETRY_SECONDS)

    def start_events(self) -> None:
        if self.watched and self._events is None:
            self._events = threading.Thread(target=self._listen, name="console-events", daemon=True)
            self._events.start()

    # -- inspect -----------------------------------------------------------------------------
    def _ask(self) -> None:
        from crawlcluster.app import app

        inspect = app.control.inspect(timeout=REPLY_SECONDS)
        stats = inspect.stats() or {}
        queues = inspect.active_queues() or {}
        now = time.time()
        with self._lock:
            for name, answer in stats.items():
                pool = answer.get("pool") or {}
                entry = self._entry(name)
                entry.update(
                    pid=answer.get("pid"), concurrency=pool.get("max-concurrency"),
                    processes=[int(p) for p in pool.get("processes") or []],
                    tasks=sum(int(n) for n in (answer.get("total") or {}).values()),
                    queues=sorted(q.get("name", "?") for q in queues.get(name) or []),
                    last_seen=now, offline=False)

    def refresh(self) -> None:
        """Ask Celery again when the last answer is older than ASK_SECONDS."""
        if not self.watched or time.monotonic() - self._asked_at < ASK_SECONDS:
            return
        if not self._ask_lock.acquire(blocking=False):
            return
        try:
            self._ask()
            self.error = None
        except Exception as exc:  # noqa: BLE001 - the broker away: the page says so
            logger.warning("could not ask the workers for their stats: %s", exc)
            self.error = f"Celery could not be asked ({exc})"
        finally:
            self._asked_at = time.monotonic()
            self._ask_lock.release()

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(entry) for _, entry in sorted(self.workers.items())]


class LeaseMemory:
    """Every worker lease the console has read, kept after the scheduler's sweep deletes an
    expired one, so that a process that stopped heart-beating stays on the page."""

    def __init__(self) -> None:
        self.leases: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def read(self, rows: list[Any], now: float) -> list[dict[str, Any]]:
        with self._lock:
            present = set()
            for worker, expires_at, updated_at in rows:
                present.add(worker)
                self.leases[worker] = {"worker": worker, "expires_at": expires_at, "renewed_at": updated_at,
                                       "swept": False}
            for worker, lease in self.leases.items():
                if worker not in present:
                    lease["swept"] = True
            shown = []
            for worker, lease in sorted(self.leases.items()):
                host, pid = _host_pid(worker)
                alive = not lease["swept"] and lease["expires_at"] > now
                shown.append({**lease, "host": host, "pid": pid, "alive": alive,
                              "renewed_ago": max(0.0, now - lease["renewed_at"]),
                              "state": "alive" if alive else "stopped"})
            return shown


def _state(entry: dict[str, Any], now: float) -> tuple[str, str]:
    """A Celery worker's state as a word and a sentence."""
    seen = max(entry.get("last_seen") or 0.0, entry.get("heartbeat_at") or 0.0)
    if entry["offline"]:
        return "stopped", "said goodbye (worker-offline event)"
    if not seen:
        return "unknown", "not seen yet"
    ago = now - seen
    if ago > SILENT_SECONDS:
        return "silent", f"no heartbeat or answer for {ago:.0f} s"
    return "online", f"seen {ago:.0f} s ago"


def _owner(lease: dict[str, Any], celery: list[dict[str, Any]]) -> str | None:
    """The Celery worker whose process (main or pool child) holds ``lease``."""
    for entry in celery:
        pids = {entry.get("pid"), *entry.get("processes", [])}
        if lease["pid"] in pids and entry["name"].rpartition("@")[2] == lease["host"]:
            return entry["name"]
    return None


def workers_page(database_url: str | None, watch: CeleryWatch, leases: LeaseMemory) -> dict[str, Any]:
    """Everything the workers page shows, as one JSON-ready dict."""
    watch.refresh()
    now = time.time()
    with get_engine(database_url).connect() as conn:
        lease_list = leases.read(worker_leases.lease_rows(conn), now)
        render_rows = render.render_worker_rows(conn)
    celery = watch.snapshot()
    for entry in celery:
        entry["state"], entry["state_text"] = _state(entry, now)
        entry["leases"] = []
    by_name = {entry["name"]: entry for entry in celery}
    loose: list[dict[str, Any]] = []
    for lease in lease_list:
        owner = _owner(lease, celery)
        (by_name[owner]["leases"] if owner else loose).append(lease)
    renderers = []
    for row in render_rows:
        known = by_name.get(row["hostname"])
        renderers.append({
            **row, "pss_text": human_bytes(row["browser_pss_bytes"]) if row["browser_pss_bytes"] else "-",
            "rss_text": human_bytes(row["browser_rss_bytes"]) if row["browser_rss_bytes"] else "-",
            "reported_ago": max(0.0, now - row["updated_at"]),
            "state": known["state"] if known else ("unknown" if watch.watched else "embedded"),
        })
    return {"celery": celery, "watched": watch.watched, "error": watch.error, "leases": loose,
            "render": renderers, "now": now}
