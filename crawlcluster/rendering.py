"""Render options and the per-host memory behind ``render="auto"``: the control plane's side of
the browser tier (the browser itself lives in ``workers/browser/renderer.py``).

A request asks for a browser with ``render=True`` (always) or ``render="auto"`` (fetch with
httpx first; the spider's ``needs_render(response)`` decides). Its :class:`RenderOptions`
travel in the row's fetch options as a small dict of the non-default values. When the
parse stage finds that a page of a host needs a browser, the host is remembered in the
``render_hosts`` table, and the scheduler sends that host's later ``auto`` rows straight to
the render queue.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from sqlalchemy.engine import Connection

from crawlcluster.database.render import RENDER, WHOLE_HOST, add_render_host, render_decisions
from crawlcluster.errors import ConfigurationError
from crawlcluster.urls import url_host, url_shape

logger = logging.getLogger(__name__)

__all__ = ["RenderOptions", "RENDER_MODES", "WAIT_UNTIL", "render_mode", "render_key",
           "remember_render_host", "RenderHostMemory", "REFRESH_SECONDS"]

RENDER_MODES = (False, True, "auto")
# wait_until values and the browser's own lifecycle event each one waits for
WAIT_UNTIL = {"load": "load", "domcontentloaded": "domcontentloaded", "networkidle": "networkidle0"}
DEFAULT_VIEWPORT = (1280, 800)


class RenderOptions:
    """How a browser renders one page. Every argument is keyword-only and optional:

    - ``wait_until``: ``"load"`` (default), ``"domcontentloaded"`` or ``"networkidle"``
      (no network connection for 500 ms; slowest, for pages that fetch their content).
    - ``wait_for``: then also wait for a CSS selector to appear (``"#results li"``) or for
      a number of milliseconds (``1500``).
    - ``js_script``: a JavaScript expression or function source run after that; its
      (JSON) value reaches the callback as ``response.js_result``.
    - ``viewport``: ``(width, height)`` in CSS pixels, default 1280x800.
    - ``load_images``: images, fonts and media are blocked unless this is True. Blocking
      them is most of what makes rendering cheap; turn it on for screenshots that must
      show them.
    - ``timeout_seconds``: the whole page, navigation to script; default the
      ``render_page_timeout_seconds`` setting. A page slower than this ends as a timeout.
    - ``screenshot``: store a PNG of the viewport with the page's results.

    ``RenderOptions(wait_for="#app")`` is what most JavaScript sites need. Options compare by
    value and travel as :meth:`to_dict` (the non-default values only).
    """

    __slots__ = ("wait_until", "wait_for", "js_script", "viewport", "load_images", "timeout_seconds",
                 "screenshot")

    def __init__(
        self,
        *,
        wait_until: str = "load",
        wait_for: str | int | float | None = None,
        js_script: str | None = None,
        viewport: tuple[int, int] | list[int] | dict[str, int] | None = None,
        load_images: bool = False,
        timeout_seconds: float | None = None,
        screenshot: bool = False,
    ) -> None:
        if wait_until not in WAIT_UNTIL:
            raise ConfigurationError(
                f"render option wait_until={wait_until!r} must be one of {', '.join(WAIT_UNTIL)}")
        if isinstance(wait_for, bool) or (wait_for is not None
                                          and not isinstance(wait_for, (str, int, float))):
            raise ConfigurationError(
                f"render option wait_for={wait_for!r} must be a CSS selector or milliseconds")
        if isinstance(wait_for, (int, float)) and wait_for < 0:
            raise ConfigurationError(f"render option wait_for={wait_for!r} must not be negative")
        if isinstance(viewport, dict):
            viewport = (viewport.get("width", DEFAULT_VIEWPORT[0]),
                        viewport.get("height", DEFAULT_VIEWPORT[1]))
        if viewport is not None:
            if len(viewport) != 2 or not all(isinstance(v, int) and v > 0 for v in viewport):
                raise ConfigurationError(
                    f"render option viewport={viewport!r} must be (width, height) in pixels")
            viewport = (int(viewport[0]), int(viewport[1]))
        if timeout_seconds is not None and timeout_seconds <= 0:
            raise ConfigurationError(f"render option timeout_seconds={timeout_seconds!r} must be positive")
        self.wait_until = wait_until
        self.wait_for = wait_for
        self.js_script = js_script
        self.viewport: tuple[int, int] = viewport or DEFAULT_VIEWPORT
        self.load_images = bool(load_images)
        self.timeout_seconds = timeout_seconds
        self.screenshot = bool(screenshot)

    def to_dict(self) -> dict[str, Any]:
        """The non-default options, as stored in a row's fetch options (JSON, small)."""
        values: dict[str, Any] = {}
        for name, default in _DEFAULTS.items():
            value = getattr(self, name)
            if value != default:
                values[name] = list(value) if isinstance(value, tuple) else value
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> "RenderOptions":
        """Options from :meth:`to_dict` (unknown keys are an error that names them)."""
        values = dict(values or {})
        unknown = set(values) - set(cls.__slots__)
        if unknown:
            raise ConfigurationError(f"unknown render options {sorted(unknown)}; known: "
                                     f"{', '.join(cls.__slots__)}")
        return cls(**values)

    @classmethod
    def coerce(cls, value: "RenderOptions | dict[str, Any] | None") -> "RenderOptions | None":
        if value is None or isinstance(value, RenderOptions):
            return value
        if isinstance(value, dict):
            return cls.from_dict(value)
        raise ConfigurationError(
            f"render_options must be a RenderOptions or a dict, not {type(value).__name__}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RenderOptions):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self.__slots__)

    def __hash__(self) -> int:
        return hash(tuple(getattr(self, n) for n in self.__slots__))

    def __repr__(self) -> str:
        changed = self.to_dict()
        if "js_script" in changed and len(changed["js_script"]) > 40:
            changed["js_script"] = changed["js_script"][:37] + "..."  # keep log lines short
        args = ", ".join(f"{k}={v!r}" for k, v in changed.items())
        return f"RenderOptions({args})"


_DEFAULTS: dict[str, Any] = {"wait_until": "load", "wait_for": None, "js_script": None,
                             "viewport": DEFAULT_VIEWPORT, "load_images": False, "timeout_seconds": None,
                             "screenshot": False}


def render_mode(value: Any, where: str) -> bool | str:
    """``value`` checked as a render mode (False, True or "auto")."""
    if value is None:
        return False
    if not any(value is mode for mode in (False, True)) and value != "auto":
        raise ConfigurationError(f"render={value!r} of {where} must be False, True or 'auto'")
    return value


# -- render="auto": which hosts, callbacks and URL shapes need a browser -----------------

MAX_SHAPE_LENGTH = 500  # render_hosts.shape's size
REFRESH_SECONDS = 0.5  # how often a process reads render_hosts again (RenderHostMemory)


def render_key(url: str, callback: str) -> tuple[str, str, str]:
    """``(host, callback, shape)``: what ``render="auto"`` learns about, per project. The
    shape is the URL's path and query with numbers and ids folded (the trap guard's
    :func:`~crawlcluster.urls.url_shape`, without the host): ``/item/<n>``."""
    host = url_host(url)
    shape = url_shape(url)
    shape = shape[shape.find("/"):] if "/" in shape else ""
    return host, callback or "parse", shape[:MAX_SHAPE_LENGTH]


def remember_render_host(conn: Connection, project: str, key: tuple[str, str, str], url: str, reason: str,
                         now: float | None = None) -> bool:
    """Remember that the pages of ``key`` (host, callback, shape) need a browser in
    ``project``; True when that is news."""
    now = time.time() if now is None else now
    host, callback, shape = key
    values = {"project": project, "host": host, "callback": callback, "shape": shape, "first_url": url,
              "reason": reason, "created_at": now}
    changed = add_render_host(conn, values)
    if changed:
        logger.info("project %s: %s%s (callback %s) needs a browser (%s, first seen at %s)", project, host,
                    shape, callback, reason, url)
    return changed


class RenderHostMemory:
    """A process's view of ``render_hosts``, the decisions every parse worker and the
    scheduler share: one small query per project at most every ``refresh_seconds``, not one
    per row. A row routed to fetch just before its key was learned is no loss: the parse
    stage sends it on to render itself."""

    def __init__(self, engine: Any, refresh_seconds: float = REFRESH_SECONDS) -> None:
        self.engine = engine
        self.refresh_seconds = refresh_seconds
        self._decisions: dict[str, tuple[float, dict[tuple[str, str, str], str]]] = {}
        self._lock = threading.Lock()

    def decision(self, project: str, key: tuple[str, str, str]) -> str | None:
        """``render``, ``plain``, ``learning`` or None (never seen) for ``key`` in
        ``project``; a host remembered whole (before migration 0021) is ``render``."""
        now = time.monotonic()
        with self._lock:
            cached = self._decisions.get(project)
            if cached is None or now - cached[0] >= self.refresh_seconds:
                with self.engine.connect() as conn:
                    cached = (now, render_decisions(conn, project))
                self._decisions[project] = cached
            decisions = cached[1]
        if decisions.get((key[0], *WHOLE_HOST)) == RENDER:
            return RENDER
        return decisions.get(key)

    def needs_render(self, project: str, url: str, callback: str) -> bool:
        return self.decision(project, render_key(url, callback)) == RENDER

    def learned(self, project: str, key: tuple[str, str, str], decision: str) -> None:
        """What this process just wrote, seen at once (other processes see it at their next read)."""
        with self._lock:
            cached = self._decisions.get(project)
            if cached is not None:
                cached[1][key] = decision
