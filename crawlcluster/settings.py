"""Every crawlcluster setting, declared once: name, type, default and environment variable.

:class:`Settings` is that declaration: one typed attribute per setting, whose field
carries its parser, help text and lower bound. A process reads its settings once, with
:func:`current` (environment ``CRAWLCLUSTER_<NAME>``, then :func:`configure`'s in-process
overrides, each value parsed and checked when the object is built), and hands the object
to its components' ``from_settings()``; a component's ``__init__`` takes plain values, so
it tests alone and nothing below it reads a setting by name. :data:`OPTIONS` (the same
table by name) feeds the README's settings table and ``celeryconfig.py``; the embedded
crawl uses :func:`configure` to switch to an in-memory broker and an SQLite file.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Mapping, TypeVar

from crawlcluster.errors import ConfigurationError
from crawlcluster.netguard import parse_allow_list, parse_host_map

logger = logging.getLogger(__name__)

__all__ = ["OPTIONS", "Option", "RETRY_POLICIES", "RetryPolicy", "Settings", "configure", "current", "get",
           "reset"]

T = TypeVar("T")


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected a boolean (true/false), got {value!r}")


def _allow_list(value: str) -> str:
    parse_allow_list(value)  # checked here, parsed where used (AddressPolicy.from_settings)
    return value


def _host_map(value: str) -> str:
    parse_host_map(value)
    return value


def seconds_list(value: str) -> list[float]:
    """``"30,3600,21600"`` -> [30.0, 3600.0, 21600.0]."""
    try:
        delays = [float(part) for part in value.split(",") if part.strip()]
    except ValueError:
        delays = []
    if not delays or any(d < 0 for d in delays):
        raise ValueError("expected comma-separated non-negative seconds, such as 30,3600,21600")
    return delays


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how soon a retryable failure is tried again.

    ``timeout_retries`` bounds the retries of a fetch that timed out (a server that did
    not answer within the read timeout twice rarely answers the third time, and each try
    costs a whole timeout); ``retry_after_max_seconds`` caps a server's ``Retry-After``.
    """

    name: str
    retries: int
    retry_delays: tuple[float, ...]
    retry_after_max_seconds: float
    timeout_retries: int

    def __str__(self) -> str:
        delays = ", ".join(_seconds_text(d) for d in self.retry_delays)
        return f"{self.name} ({self.retries} retries after {delays})"


def _seconds_text(seconds: float) -> str:
    """``30 s``, ``1 h``, ``1 day``: a policy's delays as its help text shows them."""
    for unit, size in (("day", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


# The named retry policies; crawlcluster.scheduling applies them, and the help texts of the
# retry settings below are written from them.
RETRY_POLICIES: dict[str, RetryPolicy] = {
    # One-shot crawls: a 5xx or a reset gets a quick second try (2 s, for a blip) and a
    # third after the server had 10 s to recover; a page answering 500 ends 12 s after its
    # first try. A Retry-After of up to a minute is obeyed. A timeout is tried once more:
    # with the default timeouts (20 s read, 30 s a fetch in all) a page that never answers
    # ends failed within 30 + 2 + 30 s of its first try.
    "quick": RetryPolicy("quick", retries=2, retry_delays=(2.0, 10.0), retry_after_max_seconds=60.0,
                         timeout_retries=1),
    # Crawls that run for days (auto_recrawl, @every): the back-off crawlcluster always
    # had, so an outage of a few hours costs no page.
    "recurring": RetryPolicy("recurring", retries=3, retry_delays=(30.0, 3600.0, 21600.0, 43200.0, 86400.0),
                             retry_after_max_seconds=86400.0, timeout_retries=3),
}
DEFAULT_RETRY_POLICY = "quick"


def module_prefixes(value: str) -> str:
    """``"myproj, acme.spiders"`` -> ``"myproj,acme.spiders"``: dotted module names, checked."""
    names = [part.strip() for part in value.split(",") if part.strip()]
    for name in names:
        if not all(piece.isidentifier() for piece in name.split(".")):
            raise ValueError(f"expected comma-separated module names such as myproj,acme.spiders; "
                             f"{name!r} is not one")
    return ",".join(names)


def policy_name(value: str) -> str:
    """A retry policy's name, checked against :data:`RETRY_POLICIES`."""
    name = value.strip().lower()
    if name not in RETRY_POLICIES:
        raise ValueError(f"expected a retry policy: {' or '.join(RETRY_POLICIES)}")
    return name


def _per_policy(attribute: str, text: Callable[[Any], str] = str) -> str:
    """``60 s quick, 1 day recurring``: one attribute of every policy, for a help text."""
    return ", ".join(f"{text(getattr(policy, attribute))} {name}" for name, policy in RETRY_POLICIES.items())

@dataclass(frozen=True)
class Option:
    """One setting: its default, how to parse it from the environment, and why it exists."""

    default: Any
    type: Callable[[str], Any]
    doc: str
    minimum: float | None = None

    def env_name(self, name: str) -> str:
        return "CRAWLCLUSTER_" + name.upper()


def _option(default: T, parse: Callable[[str], Any], doc: str, minimum: float | None = None) -> T:
    """A :class:`Settings` field: typed as its default for mypy, with its :class:`Option`
    in the field's metadata for :data:`OPTIONS`."""
    return field(default=default, metadata={"option": Option(default, parse, doc, minimum)})


@dataclass(frozen=True)
class Settings:
    """This process's settings, read once (:func:`current`) and handed to components.

    Frozen, so a component cannot change what another one sees; a test or a tool that wants
    other values builds its own with ``dataclasses.replace(settings.current(), ...)`` or
    :meth:`load` over an environment of its own.
    """

    # where the cluster lives
    broker_url: str = _option(
        "redis://127.0.0.1:6379/0", str,
        "Celery broker. The message transport only: Postgres holds the truth.")
    broker_key_prefix: str = _option(
        "", str,
        "Prefix of every Redis key the cluster uses, so several clusters (or test runs) can share one Redis.")
    database_url: str = _option(
        "postgresql+psycopg2://postgres@127.0.0.1:5432/crawlcluster", str,
        "The task table, projects and results (SQLAlchemy URL; sqlite:///file.db works for one machine).")
    # fetching
    user_agent: str = _option(
        "crawlcluster/0.1 (+https://github.com/crawlcluster/crawlcluster)", str,
        "User-Agent header of every fetch unless a request sets its own.")
    connect_timeout_seconds: float = _option(10.0, float, "Time allowed to open a connection.", minimum=0.01)
    read_timeout_seconds: float = _option(
        20.0, float,
        "Time allowed between two reads of a response (a server that accepts and never answers).",
        minimum=0.01)
    fetch_timeout_seconds: float = _option(
        30.0, float, "Time one fetch may take in all, connecting to the last body byte (a server that "
        "dribbles bytes for ever).", minimum=0.01)
    max_body_bytes: int = _option(
        10 * 1024 * 1024, int,
        "Largest response body kept, counted after decompression while streaming; larger ends as failed.",
        minimum=1)
    max_redirects: int = _option(
        10, int, "Redirect hops followed from one URL before the row fails.", minimum=1)
    trial_max_requests: int = _option(
        50, int, "Follow-up requests `crawlcluster parse --depth N` fetches in all, at most (the rest are "
        "listed, not fetched).", minimum=0)
    # the address guard (crawlcluster.netguard)
    ssrf_guard: bool = _option(
        True, _bool, "Refuse connections a discovered URL would make to loopback, private, link-local (cloud "
        "metadata), CGNAT, unique-local, multicast and reserved addresses, checked after name resolution; "
        "the hosts of submitted start URLs are trusted.")
    private_allow: str = _option(
        "", _allow_list,
        "Hosts (name or name:port), addresses and networks the address guard lets discovered "
        "URLs reach in every project, comma-separated (such as wiki.corp:8080,10.20.0.0/16).")
    host_map: str = _option(
        "", _host_map,
        "Names resolved to fixed addresses before DNS, comma-separated name=address (as curl's "
        "--resolve; such as shop.test=127.0.0.2). The address guard checks the mapped address.")
    fetch_concurrency: int = _option(
        128, int, "Fetches in flight in one fetch worker process (all its threads together).", minimum=1)
    fetch_batch_size: int = _option(
        16, int, "URLs per fetch message. The fetch task hands the batch on in waves as its pages finish: "
        "one parse and one store message per wave (one wave when every page answers quickly).", minimum=1)
    fetch_batch_max: int = _option(
        64, int, "Most URLs per fetch message when the scheduler claims many rows at once: a claim is sent "
        "in at least 32 fetch messages of fetch_batch_size URLs or more, up to this many (fewer messages "
        "per URL for the scheduler and Redis on a busy frontier; a small claim keeps fetch_batch_size).",
        minimum=1)
    body_compress_level: int = _option(1, int, "zlib level for page bodies inside messages (0 stores raw).")
    body_key_ttl_seconds: float = _option(
        3600.0, float, "On Redis, a wave's page bodies travel to parse in one key beside the message "
        "(written once, compressed together, deleted by parse); the key expires after this long if no parse "
        "finishes it, and its rows are sent again at their deadline. 0 keeps bodies inside the messages.",
        minimum=0)
    # scheduling
    claim_batch_size: int = _option(
        2000, int, "Most rows the scheduler claims and publishes in one tick.", minimum=1)
    max_queued_per_project: int = _option(
        5000, int, "Most rows of one project queued at once; the rest wait as pending in the table, nothing "
        "is dropped.", minimum=1)
    queued_deadline_seconds: float = _option(
        600.0, float, "A row queued longer than this lost its message (worker killed, broker restarted) and "
        "is sent again.", minimum=1)
    max_dispatches: int = _option(
        5, int, "Times a row is sent to the workers without an outcome (its message lost, its parse task "
        "raised) before the scheduler ends it failed with the last error it had.", minimum=1)
    max_worker_crashes: int = _option(
        2, int, "Parse runs of a page that kill their worker process (a crash, os._exit, the OOM killer, the "
        "hard time limit) before its row ends failed; a crashed batch's pages are retried one by one.",
        minimum=1)
    parse_time_limit_seconds: float = _option(
        60.0, float, "Time one parse message (a batch of pages) may take: past it the running callback gets "
        "SoftTimeLimitExceeded (its page fails), 10 s later the worker process is killed and the batch's "
        "pages are retried one by one (prefork pool only).", minimum=1)
    # bounded cost for any page (README: Crawling the open web safely)
    max_url_length: int = _option(
        2083, int, "Longest URL crawled (Scrapy's URLLENGTH_LIMIT): longer links are dropped and counted, "
        "a redirect to one fails its row, submit refuses one.", minimum=64)
    max_links_per_page: int = _option(
        10_000, int, "Links (requests) one callback run may add to the frontier; the ones it yields past "
        "this are dropped and counted.", minimum=1)
    max_html_depth: int = _option(
        512, int, "Deepest element nesting parsed (Blink's limit): deeper tags become siblings at this "
        "depth before the parser sees them, so a page of 100,000 nested tags costs linear time; counted.",
        minimum=16)
    trap_shape_chain: int = _option(
        1000, int, "Crawler trap: pages of one URL shape (host, path and query with numbers and ids folded) "
        "each found on the previous one; the link that would make the chain longer ends failed (kind "
        "trap) instead of being fetched (0: no limit).", minimum=0)
    trap_segment_repeats: int = _option(
        2, int, "Crawler trap: times a run of path segments may repeat back to back (/a/b/a/b is 2); a "
        "link repeating more ends failed (kind trap) (0: no limit).", minimum=0)
    retry_policy: str = _option(
        DEFAULT_RETRY_POLICY, policy_name,
        "Retry policy of rows that name none: " + " or ".join(str(p) for p in RETRY_POLICIES.values())
        + "; quick lets a one-shot crawl end within about a minute of its last page, auto_recrawl rows get "
        "recurring unless they name a policy.")
    retries: int | None = _option(
        None, int, "Retries of a URL after a retryable failure (connection, timeout, 5xx, 408, 429); unset: "
        "the retry policy's.", minimum=0)
    retry_delays: list[float] | None = _option(
        None, seconds_list,
        "Seconds before each retry, comma-separated; the last repeats (a 429/503 Retry-After wins up to "
        "retry_after_max_seconds); unset: the retry policy's.")
    retry_after_max_seconds: float | None = _option(
        None, float, "Longest Retry-After honoured; a longer one waits this long (unset: the policy's, "
        + _per_policy("retry_after_max_seconds", _seconds_text) + ").", minimum=0)
    timeout_retries: int | None = _option(
        None, int, "Retries of a URL whose fetch timed out, counted apart from its other retries, at most "
        "(unset: the policy's, " + _per_policy("timeout_retries") + ").", minimum=0)
    per_host_concurrency: int = _option(
        8, int, "Requests to one host in flight at once across the whole cluster (per project: "
        "per_host_concurrency).", minimum=1)
    per_host_refill_fraction: float = _option(
        0.25, float, "A host with requests in flight is given more only once this share of its "
        "per_host_concurrency is free (at least one slot, at most fetch_batch_size): its URLs go out in "
        "batches, each one fetch, parse and store message, not one by one as pages finish. 0: as soon "
        "as one slot is free.", minimum=0)
    per_host_delay_seconds: float = _option(
        0.0, float, "Least time between two requests to one host (per project: per_host_delay); robots.txt "
        "Crawl-delay raises it.", minimum=0)
    obey_robots: bool = _option(
        True, _bool,
        "Fetch each host's robots.txt first and skip what it disallows (per project: obey_robots).")
    max_robots_bytes: int = _option(
        500 * 1024, int, "Bytes of a robots.txt kept and parsed (Google reads the first 500 KiB); the rest "
        "is ignored and the host's robots note says so.", minimum=1024)
    max_crawl_delay_seconds: float = _option(
        60.0, float, "Longest robots.txt Crawl-delay obeyed; a longer one waits this long between requests "
        "to its host, and the log and the host's robots note say so.", minimum=0)
    robots_ttl_seconds: float = _option(
        86400.0, float, "How long a fetched robots.txt is trusted.", minimum=1)
    robots_error_attempts: int = _option(
        3, int, "Fetches of a host's robots.txt in a row that fail (HTTP 5xx, a timeout, a connection "
        "refused or broken, a name that does not resolve) before the host's rows end failed (kind robots); "
        "between two, the retry policy's delays.", minimum=1)
    robots_unreachable_seconds: float = _option(
        600.0, float, "How long a host whose robots.txt stayed unreachable keeps failing its new rows at "
        "once, before its robots.txt is asked again (its rows waiting then still fail; later ones wait for "
        "the answer). `crawlcluster retry --failed` asks again at once.", minimum=0)
    database_outage_retries: int = _option(
        10, int, "Times a parse, store, render or hook task that cannot reach the database is retried "
        "(after 1, 2, 4 ... s, at most 30 s apart) before it fails and its rows wait for their deadline.",
        minimum=0)
    database_ping_idle_seconds: float = _option(
        2.0, float, "A pooled Postgres connection idle this long is checked with a round trip before use "
        "(a busier one is used at once; if the server went away meanwhile its task is retried on fresh "
        "connections, see database_outage_retries).", minimum=0)
    leader_lease_seconds: float = _option(
        10.0, float, "Lease of the dispatching beat; a standby beat takes over this long after the leader "
        "dies.", minimum=1)
    worker_lease_seconds: float = _option(
        30.0, float, "Lease of a worker process on the rows of the batches it works on; rows of a worker "
        "that stopped renewing it (killed, frozen, cut off) are due again this long after its last "
        "heartbeat, not after queued_deadline_seconds.", minimum=1)
    worker_heartbeat_seconds: float = _option(
        10.0, float, "How often a worker process renews its lease (keep it well under "
        "worker_lease_seconds: a third of it).", minimum=0.1)
    worker_hand_on_delay_seconds: float = _option(
        1.0, float, "How long a worker process may wait before it writes that it let go of rows it sent on "
        "to the next stage (written with its next hold, else by its heartbeat thread this long after).",
        minimum=0)
    hold_on_receipt: bool = _option(
        True, _bool, "A worker holds a message's rows under its lease as soon as it receives the "
        "message, and lets them go when it sends them on, so the rows of a worker that dies with messages "
        "reserved are sent again; the one-process embedded crawl turns it off (its rows are released when "
        "it starts again; each stage still checks its rows when a batch starts).")
    auto_pause_failures: int = _option(
        10, int, "Consecutive failures that say the site is in trouble (HTTP 5xx or 429, a timeout, a "
        "connection that failed or broke; not a 404, a callback error, dns or robots) after which a project "
        "pauses itself (0: never).", minimum=0)
    auto_pause_seconds: float = _option(
        300.0, float,
        "How long an auto-paused project waits before a trial batch decides whether it resumes.", minimum=0.1)
    auto_pause_trial_size: int = _option(
        2, int, "Rows in flight while an auto-paused project is on trial.", minimum=1)
    delete_after_seconds: float = _option(
        86400.0, float, "How long a project marked for deletion keeps its rows and results.", minimum=0)
    tick_seconds: float = _option(
        1.0, float, "Longest pause of the scheduler between ticks when idle.", minimum=0.01)
    # worker pools by role, used when the command line does not name -P/-c
    parse_concurrency: int = _option(0, int, "Parse worker processes (0: one per CPU).")
    store_concurrency: int = _option(4, int, "Store worker threads.", minimum=1)
    # the browser tier (render workers only; other workers never start a browser)
    chromium_path: str = _option(
        "/usr/bin/chromium", str, "The Chromium executable render workers start (never downloaded).")
    render_pages_in_flight: int = _option(
        4, int, "Pages one render worker process renders at once in its browser.", minimum=1)
    render_recycle_pages: int = _option(
        100, int, "A render worker's browser is closed and started afresh after this many pages (0: never).",
        minimum=0)
    render_max_pss_bytes: int = _option(
        1024 ** 3, int, "A browser whose process tree uses more memory than this (PSS, summed over the tree) "
        "is recycled (0: no limit).", minimum=0)
    render_page_timeout_seconds: float = _option(
        30.0, float,
        "Time one page may take in the browser, navigation to script, before it ends as a timeout.",
        minimum=0.1)
    render_launch_timeout_seconds: float = _option(30.0, float, "Time Chromium may take to start.", minimum=1)
    # render="auto" learning per host, callback and URL shape (crawlcluster.render_learning)
    render_auto_agreements: int = _option(
        3, int, 'render="auto": samples of a host, callback and URL shape, fetched plainly and rendered, '
        "that must agree before its pages stay on plain HTTP; until then each of its pages is compared.",
        minimum=1)
    render_auto_recheck_rate: float = _option(
        0.02, float, 'render="auto": share of the pages of a shape learned as plain that are still rendered '
        "too and compared (0: never checked again).", minimum=0)
    render_auto_rerender_max: int = _option(
        1000, int, 'render="auto": pages of a host, callback and URL shape already parsed from a plain fetch '
        "that are rendered and parsed again when the shape is found to need a browser (the rest stay as "
        "parsed, counted in render_hosts.rerender_skipped).", minimum=0)
    browser_user: str = _option(
        "", str, "The account render workers run Chromium as (empty: nobody when the worker is root, else "
        "the worker's own); its profile directory is owned by it.")
    browser_sandbox: bool = _option(
        True, _bool, "Chromium's sandbox (on/off). Off is the explicit unsafe choice for a machine or "
        "container where it cannot start: a render worker with it on says why it cannot.")
    # what workers may import
    spider_packages: str = _option(
        "", module_prefixes,
        "Packages whose spiders workers import, comma-separated module prefixes matched on whole dotted "
        "names (myproj allows myproj.spiders, not myproject); crawlcluster's own are always allowed. Another "
        "spider's rows end failed and its project pauses. Empty: only crawlcluster's.")
    max_error_chars: int = _option(
        2000, int, "Longest error text kept on a row or a host (the middle is cut, saying how much); a URL "
        "inside an error is shortened to 200 characters.", minimum=200)
    # worker logs
    callback_error_log_seconds: float = _option(
        60.0, float,
        "A spider callback's exception is logged with its traceback once per this many seconds for each "
        "project, callback, exception type and line, in each worker process; the rows keep every error.",
        minimum=1)
    callback_error_log_lines: int = _option(
        10, int,
        "More failures of the same kind within that time are logged as one line each, up to this many; "
        "the rest are counted and their number logged when the time is up.", minimum=0)
    error_log_seconds: float = _option(
        60.0, float, "An error that repeats in beat or a worker (the database or the broker unreachable) is "
        "logged once per this many seconds, the next line counting the repeats in between.", minimum=1)
    # monitoring
    flower_auth: str = _option(
        "", str, "Basic auth for `celery -A crawlcluster flower`, user:password (several: comma-separated); "
        "empty: none, and Flower then refuses to listen on anything but loopback.")
    flower_address: str = _option(
        "127.0.0.1", str, "Address `celery -A crawlcluster flower` listens on unless FLOWER_ADDRESS or "
        "--address names one; a non-loopback address needs flower_auth (or Flower's own auth).")
    web_auth: str = _option(
        "", str, "Basic auth for the crawl console (`crawlcluster web`), user:password (several: "
        "comma-separated); required to bind any address but loopback.")
    web_search_scan_rows: int = _option(
        20_000, int, "URLs of a project the console's search reads, in URL order, when looking for text "
        "inside URLs; a URL's beginning (https://host/path) is found among all of them through an index.",
        minimum=100)

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None,
             overrides: Mapping[str, Any] | None = None) -> Settings:
        """Settings from ``environ`` (default: this process's environment) under ``overrides``
        (default: :func:`configure`'s). Every value is parsed and checked here, so a bad one
        is a :class:`ConfigurationError` naming its variable when the process starts, not
        when some code path first reads it."""
        environ = os.environ if environ is None else environ
        overrides = _overrides if overrides is None else overrides
        values: dict[str, Any] = {}
        for name, option in OPTIONS.items():
            if name in overrides:
                values[name] = _checked(name, option, overrides[name])
                continue
            raw = environ.get(option.env_name(name))
            if raw is not None and raw != "":
                values[name] = _parse(name, option, raw)
        return cls(**values)


# The same table by name: the README's settings table and celeryconfig.py read it.
OPTIONS: dict[str, Option] = {f.name: f.metadata["option"] for f in fields(Settings)}

_overrides: dict[str, Any] = {}
_current: Settings | None = None
_current_lock = threading.Lock()


def _parse(name: str, option: Option, raw: str) -> Any:
    try:
        value = option.type(raw)
    except ValueError as exc:
        raise ConfigurationError(f"{option.env_name(name)}={raw!r} is invalid: {exc}") from None
    if option.minimum is not None and value < option.minimum:
        raise ConfigurationError(
            f"{option.env_name(name)}={raw!r} is invalid: it must be at least {option.minimum}")
    return value


def _checked(name: str, option: Option, value: Any) -> Any:
    """An in-process override: text is parsed as the environment's would be; other values
    are taken as given, within the setting's lower bound."""
    if isinstance(value, str):
        return _parse(name, option, value)
    if option.minimum is not None and value is not None and value < option.minimum:
        raise ConfigurationError(f"setting {name}={value!r} is invalid: it must be at least {option.minimum}")
    return value


def _unknown(name: str) -> ConfigurationError:
    return ConfigurationError(f"unknown crawlcluster setting {name!r}; known: {', '.join(sorted(OPTIONS))}")


def current() -> Settings:
    """This process's settings, built on first use and kept until :func:`configure` or
    :func:`reset` changes what they are built from."""
    global _current
    settings = _current
    if settings is None:
        with _current_lock:
            if _current is None:
                _current = Settings.load()
            settings = _current
    return settings


def get(name: str) -> Any:
    """The current value of setting ``name``, for ``celeryconfig.py``, which maps our names
    onto Celery's; code takes a :class:`Settings` (attribute access, checked by mypy)."""
    if name not in OPTIONS:
        raise _unknown(name)
    return getattr(current(), name)


def configure(**values: Any) -> None:
    """Override settings in this process (tests and the embedded crawl); :func:`current`
    reads them afresh."""
    global _current
    for name in values:
        if name not in OPTIONS:
            raise _unknown(name)
    with _current_lock:
        _overrides.update(values)
        _current = None


def reset() -> None:
    """Forget every in-process override, and read the environment afresh on next use."""
    global _current
    with _current_lock:
        _overrides.clear()
        _current = None
