"""Scheduling options of a URL (priority, retries, re-crawl, exetime) and which one wins.

A value set on the ``Request`` wins over the callback's ``@config(...)``, which wins over
the spider's class attribute, which wins over the project's settings (changeable at run
time), which win over the cluster's defaults (``CRAWLCLUSTER_RETRIES``,
``CRAWLCLUSTER_RETRY_DELAYS``, ``CRAWLCLUSTER_RETRY_POLICY``). ``@every(minutes=...)``
marks a spider method that beat runs on a schedule.

Retries come in named policies (:data:`RETRY_POLICIES`, declared in
:mod:`crawlcluster.settings`): ``quick``, the default, lets a one-shot crawl end within
about a minute of its last page; ``recurring`` keeps the long back-off a crawl that runs
for days wants. A place that names a policy sets ``retries`` and ``retry_delays`` at that
place; an explicit ``retries`` or ``retry_delays`` at the same place wins over its policy.

For the retry options (``retry_policy``, ``retries``, ``retry_delays``) the project's
settings rank above the spider: they are what the person running the crawl said for this
run (``crawl``/``submit --retries/--retry-delay``, ``crawlcluster set``,
``Crawl.configure``, ``submit(settings=...)``), as Scrapy's command-line ``-s RETRY_TIMES``
wins over a spider's ``custom_settings``. A request's own values and a callback's
``@config`` still win over them, as a request's ``max_retry_times`` does in Scrapy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable

from crawlcluster import settings
from crawlcluster.errors import ConfigurationError
from crawlcluster.netguard import parse_allow_list
from crawlcluster.settings import DEFAULT_RETRY_POLICY, RETRY_POLICIES, RetryPolicy, Settings, seconds_list


def retry_policy(name: str) -> RetryPolicy:
    """The policy ``name``; a ConfigurationError naming the known ones if there is none."""
    key = str(name).strip().lower()
    policy = RETRY_POLICIES.get(key)
    if policy is None:
        raise ConfigurationError(f"unknown retry policy {key!r}; known: {', '.join(RETRY_POLICIES)}")
    return policy


@dataclass(frozen=True)
class ClusterRetries:
    """The cluster's retry settings, what a row that sets none of its own gets:
    CRAWLCLUSTER_RETRY_POLICY, and CRAWLCLUSTER_RETRIES, _RETRY_DELAYS,
    _RETRY_AFTER_MAX_SECONDS and _TIMEOUT_RETRIES over that policy's values (None: the
    policy's)."""

    policy: str = DEFAULT_RETRY_POLICY
    retries: int | None = None
    retry_delays: tuple[float, ...] | None = None
    retry_after_max_seconds: float | None = None
    timeout_retries: int | None = None

    @classmethod
    def from_settings(cls, s: Settings) -> ClusterRetries:
        return cls(policy=s.retry_policy, retries=s.retries,
                   retry_delays=None if s.retry_delays is None else tuple(s.retry_delays),
                   retry_after_max_seconds=s.retry_after_max_seconds, timeout_retries=s.timeout_retries)

    def default_retries(self) -> int:
        """Retries of a row that sets none: CRAWLCLUSTER_RETRIES, else the cluster policy's."""
        return retry_policy(self.policy).retries if self.retries is None else int(self.retries)

    def default_retry_delays(self) -> list[float]:
        """Back-off of a row that sets none: CRAWLCLUSTER_RETRY_DELAYS, else the cluster policy's."""
        delays = retry_policy(self.policy).retry_delays if self.retry_delays is None else self.retry_delays
        return [float(d) for d in delays]


def _this_process() -> ClusterRetries:
    # the callers that pass no ClusterRetries (the frontier's queries, the store engine) get
    # this process's settings, read once (settings.current())
    return ClusterRetries.from_settings(settings.current())


@dataclass(frozen=True)
class RetryRules:
    """What the store stage needs to retry one failed row, read from its fetch options."""

    policy: RetryPolicy
    retries: int
    retry_delays: list[float]
    retry_after_max_seconds: float
    timeout_retries: int

    @classmethod
    def of_row(cls, options: dict[str, Any] | None, cluster: ClusterRetries | None = None) -> "RetryRules":
        """The row's own values (set when they differ from the cluster's), else the cluster's;
        the Retry-After cap and timeout retries follow the row's policy unless the cluster
        sets them."""
        options = options or {}
        cluster = cluster or _this_process()
        policy = retry_policy(options.get("retry_policy") or cluster.policy)
        cap, timeout_retries = cluster.retry_after_max_seconds, cluster.timeout_retries
        return cls(
            policy=policy,
            retries=int(options.get("retries", cluster.default_retries())),
            retry_delays=[float(d) for d in (options.get("retry_delays") or cluster.default_retry_delays())],
            retry_after_max_seconds=policy.retry_after_max_seconds if cap is None else float(cap),
            timeout_retries=policy.timeout_retries if timeout_retries is None else int(timeout_retries),
        )

    def delay(self, attempt: int) -> float:
        """Seconds before retry number ``attempt`` (0-based) of this row."""
        return retry_delay(self.retry_delays, attempt)


# what @config and Request may set, and what the project's settings may default
SCHEDULE_KEYS = ("priority", "retries", "retry_delays", "retry_policy", "age", "itag", "auto_recrawl")
# what a project's settings may hold (submit(settings=...), Crawl.configure, `crawlcluster set`)
PROJECT_SETTINGS: dict[str, type] = {
    "priority": int, "retries": int, "age": int, "auto_recrawl": bool,
    "per_host_concurrency": int, "per_host_delay": float, "obey_robots": bool,
    "rate": float, "burst": float, "queue_limit": int,
    # request defaults (crawlcluster.spider_settings.request_defaults), each row gets them at creation
    "user_agent": str, "download_timeout": float,
}
# project settings with a parser of their own (see check_project_settings)
SPECIAL_PROJECT_SETTINGS = ("retry_delays", "retry_policy", "allow_private", "default_headers")
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
        raise ConfigurationError(f"@config got {', '.join(sorted(unknown))}; it takes "
                                 f"{', '.join(SCHEDULE_KEYS)}")

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

    # no defaults: resolve() sets every field from the places and the cluster's policy
    priority: int
    retries: int
    retry_delays: list[float]
    retry_policy: str
    age: int | None
    itag: str | None
    auto_recrawl: bool
    # the cluster's defaults resolve() applied; a row carries only what differs from them
    cluster: ClusterRetries = field(repr=False, compare=False)

    def row_values(self) -> dict[str, Any]:
        """Columns of crawl_tasks, plus what travels in the row's fetch options when it
        differs from the cluster default (so most rows carry nothing extra)."""
        extra: dict[str, Any] = {}
        if self.retries != self.cluster.default_retries():
            extra["retries"] = self.retries
        if self.retry_delays != self.cluster.default_retry_delays():
            extra["retry_delays"] = self.retry_delays
        if self.retry_policy != self.cluster.policy:
            extra["retry_policy"] = self.retry_policy
        return {"priority": self.priority, "retries_left": self.retries, "age": self.age, "itag": self.itag,
                "auto_recrawl": bool(self.auto_recrawl and self.age is not None and self.age >= 0),
                "_fetch_extra": extra}


def resolve(request: Any, callback: Callable | None, spider: Any, project_settings: dict[str, Any] | None,
            cluster: ClusterRetries | None = None) -> Schedule:
    """Each option from the most specific place that sets it (for the retry options the
    project's settings come before the spider: see the module's docstring).

    A place that names a ``retry_policy`` sets ``retries`` and ``retry_delays`` there (its
    own explicit values win over its policy). Where no place sets them: the cluster's
    CRAWLCLUSTER_RETRIES / CRAWLCLUSTER_RETRY_DELAYS, else the row's policy, which is
    ``recurring`` for an auto_recrawl row and the cluster's CRAWLCLUSTER_RETRY_POLICY for
    the rest. ``cluster`` None: this process's settings.
    """
    cluster = cluster or _this_process()
    callback_config = getattr(callback, CONFIG_ATTR, {}) if callback is not None else {}
    project_settings = project_settings or {}
    places = [
        lambda key: getattr(request, key, None),
        callback_config.get,
        lambda key: getattr(spider, key, None),
        project_settings.get,
    ]
    values: dict[str, Any] = {"priority": 0, "age": None, "itag": None, "auto_recrawl": False}
    for key in ("priority", "age", "itag", "auto_recrawl"):
        for place in places:
            source = place(key)
            if source is None or (key == "priority" and source == 0):  # priority 0 means "not set"
                continue
            values[key] = source
            break
    # the retry options: the project's settings (this run's command line) above the spider
    retry_places = [places[0], places[1], places[3], places[2]]
    named = next((place("retry_policy") for place in retry_places if place("retry_policy") is not None), None)
    recrawls = bool(values["auto_recrawl"] and values["age"] is not None and values["age"] >= 0)
    row_policy = retry_policy(named if named is not None else ("recurring" if recrawls else cluster.policy))
    cluster_values = {"retries": cluster.retries, "retry_delays": cluster.retry_delays}
    for key in ("retries", "retry_delays"):
        value = None
        for place in retry_places:
            value, named_here = place(key), place("retry_policy")
            if value is None and named_here is not None:
                value = getattr(retry_policy(named_here), key)
            if value is not None:
                break
        if value is None:
            value = cluster_values[key] if cluster_values[key] is not None else getattr(row_policy, key)
        values[key] = value
    values["retries"] = int(values["retries"])
    values["retry_delays"] = [float(d) for d in values["retry_delays"]]
    values["retry_policy"] = row_policy.name
    return Schedule(**values, cluster=cluster)


def check_project_settings(values: dict[str, Any]) -> dict[str, Any]:
    """Values converted to their types; unknown names and bad values raise ConfigurationError."""
    checked: dict[str, Any] = {}
    for name, value in values.items():
        if name == "retry_delays":
            try:
                delays = value if isinstance(value, list) else seconds_list(str(value))
            except ValueError as exc:
                raise ConfigurationError(f"project setting retry_delays={value!r}: {exc}") from None
            checked[name] = [float(d) for d in delays]
            continue
        if name == "retry_policy":
            checked[name] = retry_policy(str(value)).name
            continue
        if name == "allow_private":  # hosts, host:port, addresses, networks (crawlcluster.netguard)
            try:
                entries = value if isinstance(value, (list, tuple)) else str(value)
                checked[name] = list(parse_allow_list(entries))
            except ValueError as exc:
                raise ConfigurationError(f"project setting allow_private: {exc}") from None
            continue
        if name == "default_headers":  # a dict, or its JSON on the command line
            checked[name] = header_dict(value, f"project setting {name}")
            continue
        kind = PROJECT_SETTINGS.get(name)
        if kind is None:
            known = ", ".join(sorted([*PROJECT_SETTINGS, *SPECIAL_PROJECT_SETTINGS]))
            raise ConfigurationError(f"unknown project setting {name!r}; known: {known}")
        try:
            if kind is bool and isinstance(value, str):
                checked[name] = value.strip().lower() in ("1", "true", "yes", "on")
            else:
                checked[name] = None if value is None else kind(value)
        except (TypeError, ValueError):
            raise ConfigurationError(f"project setting {name}={value!r} must be a {kind.__name__}") from None
        number = isinstance(checked[name], (int, float)) and not isinstance(checked[name], bool)
        if number and checked[name] < 0 and name not in ("priority", "age"):
            raise ConfigurationError(f"project setting {name}={value!r} must not be negative")
    return checked


def header_dict(value: Any, where: str) -> dict[str, str]:
    """Default request headers: a dict, or its JSON text (``-s``, ``crawlcluster set``)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ConfigurationError(f"{where}: default_headers must be a JSON object such as "
                                     '\'{"Accept-Language": "en"}\'') from None
    if not isinstance(value, dict):
        raise ConfigurationError(f"{where}: default_headers must be a dict of header names and values")
    return {str(k): str(v) for k, v in value.items()}


def retry_delay(delays: list[float], attempt: int) -> float:
    """Seconds before retry number ``attempt`` (0-based); the last delay repeats."""
    if not delays:
        return 0.0
    return delays[min(attempt, len(delays) - 1)]
