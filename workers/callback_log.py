"""Spider callback exceptions in a worker's log: each kind's traceback once per window, a few
one-line warnings, then only counts (the failed rows keep every error)."""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

from crawlcluster import settings

logger = logging.getLogger(__name__)


@dataclass
class _FailureWindow:
    started: float
    lines: int = 0
    unlogged: int = 0


class CallbackErrorLog:
    """Logs spider callback exceptions at WARNING without flooding the worker's log.

    The row of every failed page keeps its error; the log is for the person watching the
    worker. For each (project, callback, exception type, file and line) a process logs the
    full traceback once per ``window_seconds``, then up to ``lines_per_window`` one-line
    warnings, then only counts; the count is logged with the next failure of that kind
    after the window ends (which logs its traceback again). A callback that raises on
    100,000 pages thus costs a few lines a minute. Kinds are bounded too: the least
    recently seen is forgotten beyond ``max_kinds``.
    """

    def __init__(self, window_seconds: float, lines_per_window: int,
                 clock: Callable[[], float] = time.monotonic, max_kinds: int = 1000) -> None:
        self.window_seconds = window_seconds
        self.lines_per_window = lines_per_window
        self.clock = clock
        self.max_kinds = max_kinds
        self._windows: OrderedDict[tuple[Any, ...], _FailureWindow] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, s: settings.Settings) -> CallbackErrorLog:
        return cls(s.callback_error_log_seconds, s.callback_error_log_lines)

    def report(self, project: str, url: str, callback: str, error: str, exc: BaseException | None) -> None:
        """Log one callback failure of ``project`` on ``url`` (``error`` is the row's text)."""
        frame = traceback.extract_tb(exc.__traceback__)[-1] if exc is not None and exc.__traceback__ else None
        key = (project, callback, type(exc).__name__ if exc else error,
               frame.filename if frame else "", frame.lineno if frame else 0)
        now = self.clock()
        with self._lock:
            window = self._windows.get(key)
            if window is None or now - window.started >= self.window_seconds:
                unlogged = window.unlogged if window else 0
                self._windows[key] = _FailureWindow(now)
                self._windows.move_to_end(key)
                while len(self._windows) > self.max_kinds:
                    self._windows.popitem(last=False)
                mode = "traceback"
            elif window.lines < self.lines_per_window:
                window.lines += 1
                mode = "line"
            else:
                window.unlogged += 1
                return
        if mode == "line":
            logger.warning("callback failed: project %s, url %s, callback %s: %s (traceback logged above; "
                           "at most once per %gs)", project, url, callback, error, self.window_seconds)
            return
        if unlogged:
            logger.warning("project %s, callback %s: %d more failures like the one below were not "
                           "logged in the last %gs (their rows hold the errors)", project, callback,
                           unlogged, self.window_seconds)
        logger.warning("callback failed: project %s, url %s, callback %s: %s", project, url, callback, error,
                       exc_info=(type(exc), exc, exc.__traceback__) if exc is not None else None)


_callback_errors: CallbackErrorLog | None = None


def callback_error_log() -> CallbackErrorLog:
    """This process's :class:`CallbackErrorLog`, created with the current settings."""
    global _callback_errors
    if _callback_errors is None:
        _callback_errors = CallbackErrorLog.from_settings(settings.current())
    return _callback_errors
