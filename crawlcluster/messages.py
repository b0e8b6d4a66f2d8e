"""The contract between the stages: what each message holds, declared here and nowhere else.

Every message is a batch (a stage pays the broker's per-message cost once per batch, not
once per URL), a small dict serialised with msgpack:

    scheduler      -> fetch, render  FetchMessage  {"project", "tasks": [FetchEntry, ...]}
    parse          -> render         FetchMessage  (render="auto" pages that need a browser)
    fetch, render  -> parse          ParseMessage  {"project", "pages": [Page, ...]}
    fetch, render  -> store          StoreMessage  {"project", "pages": [Outcome, ...]}
    parse          -> store          StoreMessage  (one outcome per page, with its items)
    beat           -> finished       HookMessage   {"project"}
    beat           -> periodic       HookMessage   {"project", "timer"}

Which task and queue each arrow is lives in :mod:`crawlcluster.stages`; how a message is
published, in :mod:`crawlcluster.publish`. What an entry holds travels on: a page carries
its entry's depth, callback, data and fetch options (so parse can follow a redirect, or send
the page back to render as an entry), and an outcome carries what its page cost (bytes,
fetch and browser seconds) to the store stage's statistics. A failed fetch or render, and a
304, skip parse: they are outcomes at once.

Keys with default values are left out (the callback ``parse``, depth 0, no data), URLs stay
plain text so Flower shows them, and bodies travel as bytes (msgpack), zlib-compressed. The
keys on every entry or page that stay short on the wire are :data:`CALLBACK`,
:data:`LAST_MODIFIED`, :data:`COMPRESSED` and :data:`DISPATCH`; other modules use these
names and the helpers below (:func:`entry_callback`, :func:`entry_dispatch`,
:func:`decompress_body`, the builders), never the keys.
"""

from __future__ import annotations

import zlib
from typing import Any, Final, Iterable, Mapping, NotRequired, Required, TypedDict

from crawlcluster import settings
from crawlcluster.errors import FetchError
from crawlcluster.schema import DONE, FAILED

# -- the short wire keys ----------------------------------------------------------------
# short because they ride on every entry and page of every batch (a fetch entry is ~87 bytes)
CALLBACK: Final = "cb"  # the spider method that parses the page; left out for DEFAULT_CALLBACK
LAST_MODIFIED: Final = "lm"  # the page's Last-Modified as last stored, sent back as If-Modified-Since
# a render="auto" page parsed from a plain fetch: its (host, callback, shape), noted by the store
PLAIN_KEY: Final = "pk"
COMPRESSED: Final = "z"  # true when "body" is zlib-compressed
# the row's dispatch_count when the scheduler sent it: every later message of the page carries
# it on, and a stage drops a page whose row was ended or sent again since (a redelivered or
# late message), so nothing is fetched or counted twice
DISPATCH: Final = "dn"
# a parse message whose bodies wait in a Redis key (crawlcluster.bodies): the message names the
# key (BODIES), each page its body's length in the key (BODY_LENGTH) instead of its body
BODIES: Final = "bk"
BODY_LENGTH: Final = "bl"

DEFAULT_CALLBACK = "parse"
# the keys of an entry that its page carries on to parse, and back into an entry for render
CARRIED_KEYS = ("depth", CALLBACK, "data", "fetch", DISPATCH)


class FetchEntry(TypedDict, total=False):
    """One URL to fetch or render: a claimed crawl_tasks row, as the scheduler sends it."""

    id: Required[str]  # the row's task id
    url: Required[str]
    depth: int  # links followed from a start URL; left out at 0
    cb: str  # CALLBACK
    fetch: dict[str, Any]  # fetch options: method, headers, cookies, body, timeout, render...
    data: Any  # what the spider passed to the callback (Request.data)
    etag: str  # the ETag as last stored: a re-fetch sends If-None-Match
    lm: str  # LAST_MODIFIED
    dn: int  # DISPATCH


class FetchMessage(TypedDict):
    """The fetch (or render) stage's message: a batch of entries of one project."""

    project: str
    tasks: list[FetchEntry]
    # what the address guard lets this project's fetches and pages reach although private
    # (crawlcluster.netguard.parse_allow_list entries): the hosts of its start URLs as
    # host:port, and its allow_private; left out when empty
    trust: NotRequired[list[str]]


class Page(TypedDict, total=False):
    """A fetched or rendered page (or a redirect) as the parse stage gets it."""

    id: Required[str]
    url: Required[str]  # the row's URL
    code: Required[int]  # the HTTP status
    depth: int  # the entry's CARRIED_KEYS
    cb: str
    data: Any
    fetch: dict[str, Any]
    dn: int  # DISPATCH
    redirect: str  # a 3xx: the target (absolute); such a page has no body
    headers: dict[str, str]  # the few the parse stage and the row need (content-type, etag, ...)
    body: bytes
    z: bool  # COMPRESSED
    bl: int  # BODY_LENGTH: the body is in the message's BODIES key (crawlcluster.bodies)
    wire_bytes: int  # bytes as they came over the network (what the page cost: carry_cost)
    fetch_seconds: float
    browser_seconds: float
    rendered: bool  # rendered by the browser tier
    final_url: str  # rendered: where the browser ended, when not the row's URL
    js_result: Any  # rendered: what the render options' script returned
    screenshot: int  # rendered: the screenshot's size (the PNG is stored by the render task)


class Outcome(TypedDict, total=False):
    """What the store stage writes for one row: a failure from fetch or render, a 304, a
    parsed page with its items, or a fetched robots.txt."""

    id: Required[str]
    url: Required[str]
    status: Required[str]  # DONE or FAILED
    code: int | None  # the HTTP status, when there was one
    error: str  # a failure's readable text
    kind: str  # a failure's kind: timeout, connect, dns, http, callback, redirect, robots...
    retry: bool  # a failure worth another try (as often as the row's retry policy says)
    retry_after: float  # seconds the server asked for (Retry-After)
    cb: str  # CALLBACK, kept so a failure says which callback it was for
    dn: int  # DISPATCH: store applies the outcome only while the row is queued under it
    not_modified: bool  # a 304: the row is fresh again and keeps its items
    final_url: str  # a redirect's target, or where the browser ended
    etag: str  # validators to store for the next re-fetch
    lm: str  # LAST_MODIFIED
    items: list[dict[str, Any]]  # what the callback yielded
    robots: str  # a robots.txt page: its text (workers/robots.py)
    robots_code: int  # a robots.txt page: the status its rules follow (404 for a redirect)
    robots_bytes: int  # a robots.txt cut to max_robots_bytes: the size it had
    wire_bytes: int  # what its page cost (carry_cost)
    fetch_seconds: float
    browser_seconds: float
    bounds: dict[str, int]  # what the page's bounds dropped or stopped (workers.page_bounds)
    dropped_items: dict[str, int]  # items the pipelines dropped, by reason (workers.pipelines)
    links_filtered: dict[str, int]  # links not followed: "offsite", "duplicate" (workers.parser)
    pk: list[str]  # PLAIN_KEY


class ParseMessage(TypedDict):
    project: str
    pages: list[Page]
    bk: NotRequired[dict[str, str]]  # BODIES: {"key": the Redis key, "codec": how its bytes are compressed}


class StoreMessage(TypedDict):
    project: str
    pages: list[Outcome]


class HookMessage(TypedDict, total=False):
    """A spider hook beat asks for: on_finished (the project only) or a timer."""

    project: Required[str]
    timer: str  # the @every method to run


# -- the scheduler's side -----------------------------------------------------------------
def task_entry(row: dict[str, Any]) -> FetchEntry:
    """One claimed crawl_tasks row as a fetch message entry."""
    get = row.get
    entry: FetchEntry = {"id": row["task_id"], "url": row["url"]}
    if depth := get("depth"):
        entry["depth"] = depth
    if (callback := get("callback")) and callback != DEFAULT_CALLBACK:
        entry[CALLBACK] = callback
    if fetch := get("fetch"):
        entry["fetch"] = fetch
    if (data := get("data")) is not None:
        entry["data"] = data
    # a re-fetch asks the server whether the page changed (a 304 skips parse and store)
    if etag := get("etag"):
        entry["etag"] = etag
    if last_modified := get("last_modified"):
        entry[LAST_MODIFIED] = last_modified
    if dispatch := get("dispatch_count"):
        entry[DISPATCH] = dispatch
    return entry


def project_trust(project_settings: Mapping[str, Any] | None) -> list[str]:
    """What the address guard lets a project's fetches reach although private: the hosts of
    its start URLs (``start_hosts``, host:port, recorded by submit) and its ``allow_private``."""
    values = project_settings or {}
    return list(dict.fromkeys([*(values.get("start_hosts") or ()), *(values.get("allow_private") or ())]))


def fetch_messages(project: str, rows: Iterable[dict[str, Any]], batch_size: int,
                   trust: list[str] | None = None) -> list[FetchMessage]:
    """Split claimed rows into fetch messages of at most ``batch_size`` URLs, each with the
    project's ``trust`` (:func:`project_trust`)."""
    entries = [task_entry(row) for row in rows]
    size = max(1, batch_size)
    messages: list[FetchMessage] = []
    for i in range(0, len(entries), size):
        message: FetchMessage = {"project": project, "tasks": entries[i:i + size]}
        if trust:
            message["trust"] = list(trust)
        messages.append(message)
    return messages


# a large claim is sent in at least this many fetch messages, so that it spreads over workers
MIN_MESSAGES_PER_CLAIM = 32


def claim_batch_size(rows: int, batch_size: int, batch_max: int) -> int:
    """URLs per fetch message for a claim of ``rows``: ``batch_size``, or more for a claim of
    more than MIN_MESSAGES_PER_CLAIM messages of it, up to ``batch_max``. Each message costs
    the scheduler and Redis about as much as its URLs together, so a busy frontier sends
    fewer, fuller messages, while a small claim still spreads over the fetch workers."""
    return max(batch_size, min(batch_max, -(-rows // MIN_MESSAGES_PER_CLAIM)))


def entry_callback(message: FetchEntry | Page | Outcome) -> str:
    """The spider method an entry, a page or an outcome is for."""
    return message.get(CALLBACK) or DEFAULT_CALLBACK


def entry_dispatch(message: FetchEntry | Page | Outcome) -> int | None:
    """The dispatch of its row an entry, a page or an outcome belongs to (None: a message
    from before dispatches were carried, checked by the row's state alone)."""
    return message.get(DISPATCH)


def entry_last_modified(entry: FetchEntry) -> str | None:
    """The Last-Modified stored with an entry's row, for If-Modified-Since."""
    return entry.get(LAST_MODIFIED)


# -- the fetch and render stages' side ----------------------------------------------------
def page_message(entry: FetchEntry, status: int | None, headers: dict[str, str], body: bytes, *,
                 seconds: float, wire_bytes: int, redirect_to: str | None = None, rendered: bool = False,
                 final_url: str | None = None, js_result: Any = None, screenshot_bytes: int = 0,
                 compress: bool = True) -> Page:
    """A fetched page, a redirect or (``rendered``) a rendered page, as parse needs it.

    ``seconds`` is what the page cost: fetch seconds, or browser seconds when rendered.
    A redirect carries its target and no body. A rendered page also says where the browser
    ended (``final_url``, after client-side redirects), its script's ``js_result`` and its
    screenshot's size (the render task stores the PNG itself). ``compress=False`` leaves the
    body raw, for :func:`crawlcluster.bodies.stash` to compress with the wave's others."""
    assert status is not None, f"a page of {entry['url']} without a status"  # only failures lack one
    page: Page = {"id": entry["id"], "url": entry["url"], "code": status}
    if rendered:
        page["rendered"] = True
    _carry(entry, page)
    if rendered:
        page["browser_seconds"] = round(seconds, 4)  # the crawl's browser cost
    else:
        page["fetch_seconds"] = round(seconds, 4)
    if redirect_to is not None:
        page["redirect"] = redirect_to
        return page
    page["headers"] = {k: v for k, v in headers.items() if k != "location"}
    page["body"], page[COMPRESSED] = compress_body(body) if compress else (body, False)
    page["wire_bytes"] = wire_bytes
    if final_url and final_url != entry["url"]:
        page["final_url"] = final_url
    if js_result is not None:
        page["js_result"] = js_result
    if screenshot_bytes:
        page["screenshot"] = screenshot_bytes
    return page


def failure_message(entry: FetchEntry, error: FetchError, *, seconds: float, retry: bool,
                    rendered: bool = False) -> Outcome:
    """A failed fetch or render as the store stage records it; ``retry`` marks one worth
    another try (with the server's Retry-After, if it gave one)."""
    outcome: Outcome = {"id": entry["id"], "url": entry["url"], "status": FAILED, "code": error.status_code,
                        "error": str(error), "kind": error.kind}
    if rendered:
        outcome["browser_seconds"] = round(seconds, 4)
    else:
        outcome["fetch_seconds"] = round(seconds, 4)
    if retry:
        outcome["retry"] = True
        if error.retry_after_seconds is not None:
            outcome["retry_after"] = error.retry_after_seconds
    if callback := entry.get(CALLBACK):
        outcome[CALLBACK] = callback
    if DISPATCH in entry:
        outcome[DISPATCH] = entry[DISPATCH]
    return outcome


def not_modified_message(entry: FetchEntry, seconds: float) -> Outcome:
    """A 304: the row is fresh again and keeps its items; nothing to parse."""
    outcome: Outcome = {"id": entry["id"], "url": entry["url"], "status": DONE, "code": 304,
                        "not_modified": True, "fetch_seconds": round(seconds, 4)}
    if DISPATCH in entry:
        outcome[DISPATCH] = entry[DISPATCH]
    return outcome


def compress_body(body: bytes, level: int | None = None) -> tuple[bytes, bool]:
    """The body as sent in a message, and whether it is compressed."""
    level = settings.current().body_compress_level if level is None else level
    if level <= 0 or len(body) < 256:
        return body, False
    return zlib.compress(body, level), True


# -- the parse and store stages' side -----------------------------------------------------
def decompress_body(page: Page) -> bytes:
    """A page's body as the server (or the browser) gave it."""
    body = page.get("body") or b""
    return zlib.decompress(body) if page.get(COMPRESSED) else body


def page_entry(page: Page) -> FetchEntry:
    """A fetched page as an entry again, to send it to render (same row, same task id)."""
    entry: FetchEntry = {"id": page["id"], "url": page["url"]}
    _carry(page, entry)
    return entry


def carry_cost(page: Page, outcome: Outcome) -> Outcome:
    """``outcome`` with what ``page`` cost, for the store stage's statistics, and the dispatch
    it belongs to."""
    if DISPATCH in page:
        outcome[DISPATCH] = page[DISPATCH]
    if "wire_bytes" in page:
        outcome["wire_bytes"] = page["wire_bytes"]
    if "fetch_seconds" in page:
        outcome["fetch_seconds"] = page["fetch_seconds"]
    if "browser_seconds" in page:
        outcome["browser_seconds"] = page["browser_seconds"]
    return outcome


def _carry(source: Any, target: Any) -> None:
    for key in CARRIED_KEYS:
        if key in source:
            target[key] = source[key]
