"""Scheduling options of a URL (priority, retries, re-crawl, exetime) and which one wins.

A value set on the ``Request`` wins over the callback's ``@config(...)``, which wins over
the spider's class attribute, which wins over the project's settings (changeable at run
time), which win over the cluster's defaults (``CRAWLCLUSTER_RETRIES``,
``CRAWLCLUSTER_RETRY_DELAYS``). ``@every(minutes=...)`` marks a spider method that beat
runs on a schedule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from crawlcluster import settings
from crawlcluster.errors import ConfigurationError

# what @config and Request may set, and what the project's settings may default
SCHEDULE_KEYS = ("priority", "retries", "retry_delays", "age", "itag", "auto_recrawl")
# what a project's settings may hold (submit(settings=...), Crawl.configure, `crawlcluster set`)
PROJECT_SETTINGS: dict[str, type] = {
    "priority": int, "retries": int, "age": int, "auto_recrawl": bool,
    "per_host_concurrency": int, "per_host_delay": float, "obey_robots": bool,
    "rate": float, "burst": float, "queue_limit": int,
}
# kept in columns of the projects table rather than in its settings JSON
PROJECT_COLUMNS = ("rate", "burst", "queue_limit")
CONFIG_ATTR = "_crawlcluster_config"
EVERY_ATTR = "_crawlcluster_every_seconds"


def config(**options: Any) -> Callable[[Callable], Callable]:
    """Defaults for the requests a callback will process::

        @config(priority=2, age=86400, retries=5)
        def parse_article(self, response): ...
    """
    unknown = set(options) - set(SCHEDULE_KEYS)
    if unknown:
        raise ConfigurationError(f"@config got {', '.join(sorted(unknown))}; it takes {', '.join(SCHEDULE_KEYS)}")

    def decorate(method: Callable) -> Callable:
        setattr(method, CONFIG_ATTR, dict(options))
        return method

    return decorate


def every(*, hours: float = 0, minutes: float = 0, seconds: float = 0) -> Callable[[Callable], Callable]:
    """Run a spider method on a schedule from beat; whatever requests it yields are added
    to the frontier (known URLs whose ``age`` has not expired are not crawled again)."""
    interval = hours * 3600 + minutes * 60 + seconds
    if interval <= 0:
        raise ConfigurationError("@every needs a positive interval, e.g. @every(minutes=10)")

    def decorate(method: Callable) -> Callable:
        setattr(method, EVERY_ATTR, float(interval))
        return method

    return decorate


@dataclass
class Schedule:
    """The effective scheduling options of one request."""

    priority: int = 0
    retries: int = 3
    retry_delays: list[float] = field(default_factory=list)
    age: int | None = None
    itag: str | None = None
    auto_recrawl: bool = False

    def row_values(self) -> dict[str, Any]:
        """Columns of crawl_tasks, plus what travels in the row's fetch options when it
        differs from the cluster default (so most rows carry nothing extra)."""
        extra: dict[str, Any] = {}
        if self.retries != settings.get("retries"):
            extra["retries"] = self.retries
        if self.retry_delays != settings.get("retry_delays"):
            extra["retry_delays"] = self.retry_delays
        return {"priority": self.priority, "retries_left": self.retries, "age": self.age, "itag": self.itag,
                "auto_recrawl": bool(self.auto_recrawl and self.age is not None and self.age >= 0),
                "_fetch_extra": extra}


def resolve(request: Any, callback: Callable | None, spider: Any, project_settings: dict[str, Any] | None) -> Schedule:
    """Each option from the most specific place that sets it."""
    callback_config = getattr(callback, CONFIG_ATTR, {}) if callback is not None else {}
    project_settings = project_settings or {}
    defaults = {"priority": 0, "retries": settings.get("retries"), "retry_delays": settings.get("retry_delays"),
                "age": None, "itag": None, "auto_recrawl": False}
    values = {}
    for key in SCHEDULE_KEYS:
        values[key] = defaults[key]
        for source in (getattr(request, key, None), callback_config.get(key), getattr(spider, key, None),
                       project_settings.get(key)):
            if source is None or (key == "priority" and source == 0):  # priority 0 means "not set"
                continue
            values[key] = source
            break
    values["retry_delays"] = [float(d) for d in values["retry_delays"]]
    return Schedule(**values)


def check_project_settings(values: dict[str, Any]) -> dict[str, Any]:
    """Values converted to their types; unknown names and bad values raise ConfigurationError."""
    checked: dict[str, Any] = {}
    for name, value in values.items():
        if name == "retry_delays":
            delays = value if isinstance(value, list) else settings.seconds_list(str(value))
            checked[name] = [float(d) for d in delays]
            continue
        kind = PROJECT_SETTINGS.get(name)
        if kind is None:
            known = ", ".join(sorted([*PROJECT_SETTINGS, "retry_delays"]))
            raise ConfigurationError(f"unknown project setting {name!r}; known: {known}")
        try:
            if kind is bool and isinstance(value, str):
                checked[name] = value.strip().lower() in ("1", "true", "yes", "on")
            else:
                checked[name] = None if value is None else kind(value)
        except (TypeError, ValueError):
            raise ConfigurationError(f"project setting {name}={value!r} must be a {kind.__name__}") from None
        if isinstance(checked[name], (int, float)) and not isinstance(checked[name], bool) and checked[name] < 0 \
                and name not in ("priority", "age"):
            raise ConfigurationError(f"project setting {name}={value!r} must not be negative")
    return checked


def retry_delay(delays: list[float], attempt: int) -> float:
    """Seconds before retry number ``attempt`` (0-based); the last delay repeats."""
    if not delays:
        return 0.0
    return delays[min(attempt, len(delays) - 1)]
