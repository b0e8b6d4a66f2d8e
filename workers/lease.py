"""A worker process's lease on the rows it works on, renewed by a heartbeat thread.

Every stage (fetch, render, parse, store) calls :func:`hold_batch` once when it starts a
batch: the rows still queued under the dispatch their message carries are marked held by
this process, the others (ended, retried or sent again since: a late or redelivered
message) are dropped before any work is done, so nothing is fetched or counted twice. A
daemon thread renews the process's lease every ``worker_heartbeat_seconds``; when a process
stops renewing it (SIGKILL, a frozen process, a cut link) the scheduler makes its queued rows
due again ``worker_lease_seconds`` after its last renewal, while a slow but live process
keeps its rows however long a batch takes.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any, Mapping, Sequence, TypeVar

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from crawlcluster import settings
from crawlcluster.database import worker_leases
from crawlcluster.messages import FetchEntry, Outcome, Page, entry_dispatch

logger = logging.getLogger(__name__)

Message = TypeVar("Message", FetchEntry, Page, Outcome)

# a failed renewal is logged at most this often (the database may be away for a while)
RENEW_ERROR_LOG_SECONDS = 60.0


class WorkerLease:
    """The lease of one worker process (its name is host and PID, so a restarted worker is a
    new holder and the old one's rows come back at the sweep)."""

    def __init__(self, engine: Engine, lease_seconds: float, heartbeat_seconds: float,
                 hand_on_delay: float = 1.0) -> None:
        self.engine = engine
        self.lease_seconds = lease_seconds
        self.heartbeat_seconds = min(heartbeat_seconds, lease_seconds / 2)
        self.hand_on_delay = min(hand_on_delay, self.heartbeat_seconds)
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.renewed_at = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_error_log = 0.0
        # what the last holds found, by their rows and dispatches: the hold a task makes when it
        # starts reuses the one its worker made when it received the message, moments before
        self._recent: dict[tuple[tuple[str, int | None], ...], tuple[float, frozenset[str]]] = {}
        self._recent_lock = threading.Lock()
        # rows sent on to the next stage, let go in this process's next lease write
        self._handed_on: set[str] = set()
        self._handed_on_since = 0.0
        self._handed_on_lock = threading.Lock()
        self._wake = threading.Event()

    @classmethod
    def from_settings(cls, engine: Engine, s: settings.Settings) -> WorkerLease:
        return cls(engine, s.worker_lease_seconds, s.worker_heartbeat_seconds, s.worker_hand_on_delay_seconds)

    def hold(self, dispatches: dict[str, int | None]) -> set[str]:
        """Hold the rows of ``dispatches`` (task id -> dispatch) still queued under it; the
        ids held. The lease is renewed in the same transaction when the last renewal is not
        fresh, so no row is ever held by a process without a live lease."""
        if not dispatches:
            return set()
        key = tuple(sorted(dispatches.items(), key=lambda item: item[0]))
        reused = self._reuse(key)
        if reused is not None:
            return set(reused)
        handed_on = self._take_handed_on(exclude=dispatches)
        try:
            try:
                held = self._hold_once(dispatches, handed_on)
            except DBAPIError as exc:
                if not exc.connection_invalidated:
                    raise
                # a pooled connection the server closed (a restart): the pool is renewed, once more
                held = self._hold_once(dispatches, handed_on)
        except Exception:
            self._give_back(handed_on)
            raise
        self.start_heartbeat()
        self._remember(key, held)
        return held

    def _hold_once(self, dispatches: dict[str, int | None], handed_on: Sequence[str]) -> set[str]:
        now = time.time()
        with self.engine.begin() as conn:
            if now - self.renewed_at >= self.heartbeat_seconds / 2:
                worker_leases.renew(conn, self.name, now + self.lease_seconds, now)
                self.renewed_at = now
            worker_leases.hand_on(conn, self.name, handed_on)
            return worker_leases.hold(conn, self.name, dispatches, now)

    def _reuse(self, key: tuple[tuple[str, int | None], ...]) -> frozenset[str] | None:
        """What this process's hold of the same rows and dispatches found less than half a
        heartbeat ago (``worker_heartbeat_seconds``), once; None otherwise.

        A threads-pool worker holds a message's rows when it receives the message and again
        when the task starts, usually within milliseconds: the second hold would be a
        transaction (and a pool ping) per message that changes nothing. Meanwhile the rows are
        held by this live lease, so the sweep leaves them alone; a row ended or sent again in
        between is still caught where it counts (the store applies an outcome only under its
        dispatch). A pool child (prefork) has a lease of its own and holds again."""
        with self._recent_lock:
            found = self._recent.pop(key, None)
        if found is not None and time.monotonic() - found[0] < self.heartbeat_seconds / 2:
            return found[1]
        return None

    def _remember(self, key: tuple[tuple[str, int | None], ...], held: set[str]) -> None:
        now = time.monotonic()
        with self._recent_lock:
            if len(self._recent) >= 256:  # holds nobody reused (a prefork parent's): forget the old
                window = self.heartbeat_seconds / 2
                for old in [k for k, (at, _) in self._recent.items() if now - at >= window]:
                    del self._recent[old]
                if len(self._recent) >= 256:
                    self._recent.clear()
            self._recent[key] = (now, frozenset(held))

    def hand_on(self, ids: Sequence[str]) -> None:
        """The rows ``ids`` were sent on to the next stage: this process holds them no more
        (the next stage's worker holds them when it receives them; until then a worker that
        takes the message and dies leaves them unheld, which the scheduler's sweep sees).

        Letting go is written with this process's next hold (the message it receives next),
        or by the heartbeat thread at most ``hand_on_delay`` later: not a transaction of its
        own per message. The sweep only releases unheld rows sent a whole lease ago
        (``worker_lease_seconds``), so the delay costs nothing there; the next stage's hold
        takes the rows over whether or not they were let go first."""
        if not ids:
            return
        with self._handed_on_lock:
            if not self._handed_on:
                self._handed_on_since = time.monotonic()
            self._handed_on.update(ids)
        self.start_heartbeat()
        self._wake.set()

    def _take_handed_on(self, exclude: Mapping[str, Any] | None = None) -> list[str]:
        """The rows handed on and not let go yet (not those this process holds again now)."""
        with self._handed_on_lock:
            if exclude:
                self._handed_on.difference_update(exclude)
            taken, self._handed_on = sorted(self._handed_on), set()
        return taken

    def _give_back(self, ids: Sequence[str]) -> None:
        if ids:
            with self._handed_on_lock:
                if not self._handed_on:
                    self._handed_on_since = time.monotonic()
                self._handed_on.update(ids)

    def flush_handed_on(self) -> None:
        """Let go of the rows handed on since the last lease write, now."""
        ids = self._take_handed_on()
        if not ids:
            return
        try:
            with self.engine.begin() as conn:
                worker_leases.hand_on(conn, self.name, ids)
        except Exception:  # noqa: BLE001 - still held by a live worker: the queued deadline bounds them
            logger.warning("could not hand on %d rows", len(ids), exc_info=True)

    def start_heartbeat(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._beat, name="crawlcluster-lease", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop renewing (the lease then expires by itself: rows handed on to the next stage's
        queue get that long to be taken there before they are sent again)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._thread = None
        self.flush_handed_on()

    def renew(self) -> None:
        now = time.time()
        with self.engine.begin() as conn:
            worker_leases.renew(conn, self.name, now + self.lease_seconds, now)
        self.renewed_at = now

    def _beat(self) -> None:
        next_renewal = time.monotonic() + self.heartbeat_seconds
        while not self._stop.is_set():
            with self._handed_on_lock:
                due = self._handed_on_since + self.hand_on_delay if self._handed_on else next_renewal
            self._wake.wait(max(0.0, min(due, next_renewal) - time.monotonic()))
            self._wake.clear()
            if self._stop.is_set():
                break
            now = time.monotonic()
            with self._handed_on_lock:
                flush = bool(self._handed_on) and now >= self._handed_on_since + self.hand_on_delay
            if flush:
                self.flush_handed_on()
            if now < next_renewal:
                continue
            next_renewal = now + self.heartbeat_seconds
            try:
                self.renew()
            except Exception as exc:  # noqa: BLE001 - the heartbeat outlives a database outage
                now = time.time()
                if now - self._last_error_log >= RENEW_ERROR_LOG_SECONDS:
                    self._last_error_log = now
                    logger.warning("worker %s could not renew its lease (%s); its rows are sent again "
                                   "if this lasts %gs", self.name, exc, self.lease_seconds)


_lock = threading.Lock()
_lease: WorkerLease | None = None
_lease_pid = 0


def current_lease(engine: Engine) -> WorkerLease:
    """This process's lease (a forked pool child gets its own)."""
    global _lease, _lease_pid
    with _lock:
        if _lease is None or _lease_pid != os.getpid() or _lease.engine is not engine:
            if _lease is not None and _lease_pid == os.getpid():
                _lease.stop()
            _lease, _lease_pid = WorkerLease.from_settings(engine, settings.current()), os.getpid()
        return _lease


def stop_lease() -> None:
    """A stopping worker (or pool child) stops its heartbeat."""
    global _lease
    with _lock:
        if _lease is not None and _lease_pid == os.getpid():
            _lease.stop()
        _lease = None


def hold_batch(engine: Engine, project: str, stage: str, messages: Sequence[Message]) -> list[Message]:
    """The entries, pages or outcomes of ``messages`` whose rows this process now holds, in
    order; the rest are logged and dropped (their rows were ended or sent again since)."""
    if not messages:
        return []
    held = current_lease(engine).hold({m["id"]: entry_dispatch(m) for m in messages})
    kept = [m for m in messages if m["id"] in held]
    if len(kept) < len(messages):
        logger.info("%s: dropped %d of %d pages of %s whose rows were ended or sent again since "
                    "(a late or redelivered message)", stage, len(messages) - len(kept), len(messages),
                    project)
    return kept


def hand_on(engine: Engine, *batches: Sequence[Mapping[str, Any]]) -> None:
    """The rows of the entries, pages or outcomes in ``batches`` were sent on to the next
    stage's queue: this process lets them go (see :meth:`WorkerLease.hand_on`). Not in one
    process (``hold_on_receipt`` off): its next stage holds them under the same lease."""
    if not settings.current().hold_on_receipt:
        return
    current_lease(engine).hand_on([m["id"] for batch in batches for m in batch])
