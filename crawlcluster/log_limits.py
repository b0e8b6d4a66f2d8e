"""The same error logged at most once per interval, with a count of its repeats.

A database or broker that cannot be reached fails every tick of beat and every heartbeat
of a worker: logged each time, with a traceback, that is thousands of lines a minute that
hide everything else. :class:`RepeatedErrorLog` logs the first occurrence of an error (by
a key the caller chooses) at once, swallows the repeats, and logs the next one after
``interval_seconds`` with how many were swallowed; :meth:`RepeatedErrorLog.clear` says
when the trouble ended. The interval is the ``error_log_seconds`` setting.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class _Seen:
    logged_at: float
    first_at: float
    suppressed: int = 0


class RepeatedErrorLog:
    """Rate-limited logging of repeated errors, per key, for one process."""

    def __init__(self, logger: logging.Logger, interval_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.interval_seconds = interval_seconds
        self.clock = clock
        self._seen: dict[str, _Seen] = {}
        self._lock = threading.Lock()

    def report(self, key: str, message: str, *args: Any, level: int = logging.ERROR) -> bool:
        """Log ``message % args`` unless ``key`` was logged less than ``interval_seconds``
        ago (then count it); a message logged after repeats says how many. True when logged."""
        now = self.clock()
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and now - seen.logged_at < self.interval_seconds:
                seen.suppressed += 1
                return False
            repeats = seen.suppressed if seen is not None else 0
            since = seen.logged_at if seen is not None else now
            self._seen[key] = _Seen(logged_at=now, first_at=seen.first_at if seen else now)
        if repeats:
            message += f" (and {repeats} more times in the last {now - since:.0f}s, not logged)"
        self.logger.log(level, message, *args)
        return True

    def active(self, key: str) -> bool:
        """Whether ``key`` has been reported and not cleared since."""
        return key in self._seen

    def clear(self, key: str) -> float | None:
        """``key``'s trouble is over: forget it; return for how long it lasted (None if it
        was not reported)."""
        with self._lock:
            seen = self._seen.pop(key, None)
        return None if seen is None else self.clock() - seen.first_at
