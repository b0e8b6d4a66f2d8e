"""Spider settings: a spider's class attributes, its ``custom_settings`` (with Scrapy's names where
they mean the same) and ``-s NAME=VALUE`` on the command line, in crawlcluster's own names.

Two kinds of setting a spider may hold:

- **row options** (:data:`ROW_OPTIONS`: priority, retries, render, max pages and depth, ...)
  are read from the spider for every request, in the order :mod:`crawlcluster.scheduling`
  states (request > callback ``@config`` > spider > project > cluster);
- **project settings** (:data:`PROJECT_OPTIONS`: robots, per-host concurrency and delay, rate,
  burst, queue limit, user agent, default headers, download timeout) are what the scheduler
  and the fetcher read per project: a spider's values are written into its project's
  settings when it is submitted, under the settings given on the same command (``-s``,
  ``--delay``, ``submit(settings=...)``), as Scrapy's ``-s`` wins over ``custom_settings``.

``custom_settings`` is applied to the class when it is defined (:func:`apply_custom_settings`,
called by ``Spider.__init_subclass__``), so every reader sees one attribute. What has no
meaning here, and class attributes whose names are close to a setting's (a typo), are
reported by :func:`setting_warnings` once, when the spider is submitted.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from crawlcluster.errors import ConfigurationError

__all__ = ["PROJECT_OPTIONS", "ROW_OPTIONS", "SCRAPY_SETTINGS", "apply_custom_settings", "parse_assignments",
           "project_values", "request_defaults", "setting_warnings"]

# written into the project's settings when the spider is submitted (scheduler and fetcher read them)
PROJECT_OPTIONS = ("obey_robots", "per_host_concurrency", "per_host_delay", "rate", "burst", "queue_limit",
                   "user_agent", "default_headers", "download_timeout")
# read from the spider for each request (crawlcluster.scheduling, Spider.with_defaults, submit)
ROW_OPTIONS = ("priority", "retries", "retry_delays", "retry_policy", "age", "itag", "auto_recrawl", "render",
               "render_options", "max_pages", "max_depth")
SPIDER_OPTIONS = PROJECT_OPTIONS + ROW_OPTIONS

# Scrapy's settings that mean the same here (custom_settings keys and -s names)
SCRAPY_SETTINGS: dict[str, str] = {
    "ROBOTSTXT_OBEY": "obey_robots",
    "DOWNLOAD_DELAY": "per_host_delay",
    "CONCURRENT_REQUESTS_PER_DOMAIN": "per_host_concurrency",
    "USER_AGENT": "user_agent",
    "DEFAULT_REQUEST_HEADERS": "default_headers",
    "DEPTH_LIMIT": "max_depth",
    "CLOSESPIDER_PAGECOUNT": "max_pages",
    "RETRY_TIMES": "retries",
    "RETRY_ENABLED": "retries",  # False: no retries; True: the usual ones
    "DOWNLOAD_TIMEOUT": "download_timeout",
}
# Scrapy's settings a custom_settings may hold that another module reads, not a setting here
HANDLED_ELSEWHERE: dict[str, str] = {
    "ITEM_PIPELINES": "the spider's item pipelines (crawlcluster.pipelines; or its attribute pipelines)",
}
# Scrapy's spider attributes that mean the same as one of ours
SCRAPY_ATTRIBUTES: dict[str, str] = {"download_delay": "per_host_delay"}
# CRAWLCLUSTER_ names (cluster defaults) whose per-project setting has another name here
CLUSTER_NAMES: dict[str, str] = {
    "per_host_delay_seconds": "per_host_delay", "max_queued_per_project": "queue_limit",
    "per_host_concurrency": "per_host_concurrency", "obey_robots": "obey_robots", "retries": "retries",
    "retry_delays": "retry_delays", "retry_policy": "retry_policy", "user_agent": "user_agent",
}
NOTES_ATTR = "_crawlcluster_setting_notes"


def _bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def check_value(name: str, value: Any, where: str) -> Any:
    """``value`` of our setting ``name`` converted to its type; a ConfigurationError naming
    ``where`` (the spider class and key, or the -s assignment) when it cannot be."""
    from crawlcluster import scheduling
    from crawlcluster.rendering import render_mode

    if value is None:
        return None
    if name == "default_headers":
        return scheduling.header_dict(value, where)
    if name in ("max_pages", "max_depth"):
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ConfigurationError(f"{where}: {name} must be a whole number, got {value!r}") from None
        if number < 0:
            raise ConfigurationError(f"{where}: {name} must not be negative, got {value!r}")
        return number
    if name == "render":
        return render_mode(value, where)
    if name in scheduling.PROJECT_SETTINGS or name in scheduling.SPECIAL_PROJECT_SETTINGS:
        try:
            return scheduling.check_project_settings({name: value})[name]
        except ConfigurationError as exc:
            raise ConfigurationError(f"{where}: {exc}") from None
    return value


def translate(key: str, value: Any) -> tuple[str, Any] | None:
    """``(our name, value)`` for a setting named in Scrapy's terms, as a ``CRAWLCLUSTER_`` variable
    or in our own terms; ``("", None)`` for one that means "leave the default"; None when
    the name has no meaning here."""
    if key in SCRAPY_SETTINGS:
        name = SCRAPY_SETTINGS[key]
        if key == "RETRY_ENABLED":
            return (name, 0) if not _bool(value) else ("", None)
        if key in ("DEPTH_LIMIT", "CLOSESPIDER_PAGECOUNT") and str(value).strip() == "0":
            return ("", None)  # Scrapy's 0: no limit, our default
        return name, value
    if key.upper().startswith("CRAWLCLUSTER_"):
        own = CLUSTER_NAMES.get(key[len("CRAWLCLUSTER_"):].lower())
        return (own, value) if own else None
    if key in SPIDER_OPTIONS or key in SCRAPY_ATTRIBUTES:
        return SCRAPY_ATTRIBUTES.get(key, key), value
    return None


def apply_custom_settings(cls: type) -> None:
    """Set ``cls``'s attributes from its own ``custom_settings`` and its Scrapy-named
    attributes (``download_delay``), converted to their types. A key with no meaning here,
    or one that disagrees with an attribute of the same class, is noted for
    :func:`setting_warnings`. A bad value raises ConfigurationError naming the class and key."""
    notes: list[str] = []
    own = dict(vars(cls))
    for attribute, name in SCRAPY_ATTRIBUTES.items():
        if attribute in own and name not in own:
            setattr(cls, name, check_value(name, own[attribute], f"{cls.__name__}.{attribute}"))
    custom = own.get("custom_settings") or {}
    if not isinstance(custom, dict):
        raise ConfigurationError(
            f"{cls.__name__}.custom_settings must be a dict, got {type(custom).__name__}")
    for key, value in custom.items():
        if key in HANDLED_ELSEWHERE:
            continue  # read where it is used (pipeline_classes), checked there with a sentence
        translated = translate(str(key), value)
        if translated is None:
            notes.append(f"custom_settings[{key!r}] has no meaning in crawlcluster and is ignored "
                         f"(its settings: {', '.join(sorted(SPIDER_OPTIONS))}; Scrapy's understood: "
                         f"{', '.join([*SCRAPY_SETTINGS, *HANDLED_ELSEWHERE])})")
            continue
        name, raw = translated
        if not name:
            continue
        checked = check_value(name, raw, f"{cls.__name__}.custom_settings[{key!r}]")
        if name in own and own[name] != checked:
            notes.append(f"custom_settings[{key!r}]={checked!r} overrides the class attribute "
                         f"{name} = {own[name]!r}")
        setattr(cls, name, checked)
    setattr(cls, NOTES_ATTR, notes)


def setting_warnings(cls: type, base: type) -> list[str]:
    """Readable warnings about ``cls`` (a subclass of the Spider class ``base``): what its
    ``custom_settings`` named that has no meaning here, and class attributes whose names look
    like a setting's but are not one (``per_host_delays``, ``obey_robot``, ``ROBOTSTXT_OBEY``)."""
    warnings: list[str] = []
    known = set(dir(base)) | set(SPIDER_OPTIONS) | set(SCRAPY_ATTRIBUTES)
    candidates = sorted(set(SPIDER_OPTIONS) | {n for n in dir(base) if not n.startswith("_")})
    for klass in cls.__mro__:
        if klass is base or not issubclass(klass, base):
            continue
        warnings += [f"{klass.__name__}: {note}" for note in vars(klass).get(NOTES_ATTR, ())]
        for attribute, value in vars(klass).items():
            if attribute.startswith("_") or attribute in known or callable(value) \
                    or isinstance(value, (property, classmethod, staticmethod)):
                continue
            scrapy_name = SCRAPY_SETTINGS.get(attribute.upper())
            if attribute.upper() in HANDLED_ELSEWHERE:
                warnings.append(f"{klass.__name__}.{attribute} is not read: {attribute.upper()} is a key of "
                                "custom_settings here, as in Scrapy (or the class attribute pipelines)")
                continue
            if scrapy_name:
                warnings.append(f"{klass.__name__}.{attribute} is not read: Scrapy's {attribute.upper()} is "
                                f"the class attribute {scrapy_name} here (or a key of custom_settings)")
                continue
            close = difflib.get_close_matches(attribute, candidates, n=1, cutoff=0.8)
            if close:
                warnings.append(f"{klass.__name__}.{attribute} is not a crawlcluster setting and is not "
                                f"read; did you mean {close[0]}?")
    return warnings


def project_values(spider: Any) -> dict[str, Any]:
    """The project settings ``spider`` sets (class attributes, ``custom_settings``, or
    arguments given to it), for its project's settings at submit."""
    values = {}
    for name in PROJECT_OPTIONS:
        value = getattr(spider, name, None)
        if value is not None:
            values[name] = check_value(name, value, f"{type(spider).__name__}.{name}")
    return values


def request_defaults(options: dict[str, Any], spider: Any, project_settings: dict[str, Any] | None) -> None:
    """Give a new row's fetch ``options`` the project's (else the spider's) user agent, default
    headers and download timeout where the request set none of its own."""
    settings = project_settings or {}

    def pick(name: str) -> Any:
        value = settings.get(name)
        return value if value is not None else getattr(spider, name, None)

    agent, headers, timeout = pick("user_agent"), pick("default_headers"), pick("download_timeout")
    defaults = {**(headers or {}), **({"User-Agent": agent} if agent else {})}
    if defaults:
        own = dict(options.get("headers") or {})
        named = {k.lower() for k in own}
        options["headers"] = {**{k: v for k, v in defaults.items() if k.lower() not in named}, **own}
    if timeout and not options.get("timeout"):
        options["timeout"] = float(timeout)


@dataclass
class Assignments:
    """What ``-s NAME=VALUE`` options say: project settings, the crawl's page and depth limits,
    and (``CRAWLCLUSTER_`` names of cluster-wide settings) settings of this process."""

    project: dict[str, Any] = field(default_factory=dict)
    max_pages: int | None = None
    max_depth: int | None = None
    cluster: dict[str, str] = field(default_factory=dict)


def parse_assignments(pairs: tuple[str, ...] | list[str]) -> Assignments:
    """``-s`` options: a project setting's name, its ``CRAWLCLUSTER_`` name or a Scrapy name
    from :data:`SCRAPY_SETTINGS`; ``CRAWLCLUSTER_`` names of cluster-wide settings go to
    ``cluster``. Anything else is a ConfigurationError listing what is known."""
    from crawlcluster import scheduling
    from crawlcluster.settings import OPTIONS

    result = Assignments()
    project_names = sorted({*scheduling.PROJECT_SETTINGS, *scheduling.SPECIAL_PROJECT_SETTINGS,
                            "max_pages", "max_depth"})
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigurationError(f"-s takes NAME=VALUE, got {pair!r}")
        translated = translate(key, raw)
        if translated is None and key.upper().startswith("CRAWLCLUSTER_") \
                and key[len("CRAWLCLUSTER_"):].lower() in OPTIONS:
            result.cluster[key[len("CRAWLCLUSTER_"):].lower()] = raw
            continue
        if key.upper() in HANDLED_ELSEWHERE:
            raise ConfigurationError(f"-s {key}: not a setting of a crawl here; it names "
                                     f"{HANDLED_ELSEWHERE[key.upper()]}: set it in custom_settings")
        if translated is None or (translated[0] and translated[0] not in project_names):
            raise ConfigurationError(
                f"-s {key}: unknown setting; give a project setting ({', '.join(project_names)}), "
                f"a CRAWLCLUSTER_ name (see the README's settings table) or one of Scrapy's: "
                f"{', '.join(SCRAPY_SETTINGS)}")
        name, value = translated
        if not name:
            continue
        checked = check_value(name, value, f"-s {pair}")
        if name == "max_pages":
            result.max_pages = checked
        elif name == "max_depth":
            result.max_depth = checked
        else:
            result.project[name] = checked
    return result
