"""The fetch engine: httpx on one asyncio loop per worker process, many fetches in flight.

Each worker process owns one ``httpx.AsyncClient`` (connections reused across tasks) on a
loop in a background thread; Celery's threads hand batches to it with :meth:`Fetcher.fetch_waves`
(results handed on as they finish) or :meth:`Fetcher.fetch_many` (all at once, in order).
A fetch waits at most ``read_timeout_seconds`` for a byte and ``fetch_timeout_seconds`` in
all; a name that does not resolve is a ``dns`` error, apart from other ``connect`` errors
(how a failure is named, and whether it is worth a retry: :mod:`workers.fetch_errors`).
Every connection goes through the address guard (:mod:`workers.guarded_transport`): a
name is resolved once and a private address is refused before any packet is sent, unless
the fetch message's ``trust`` (the project's start hosts and allow list) or the cluster's
allow list names it. Redirects are not followed here: a 3xx comes back as ``redirect_to`` and becomes a row of
its own, so the target is deduplicated like any link and each hop is recorded. Bodies are
read as a stream and decompressed by hand with a cap, so neither a huge body nor a
compression bomb is ever held in memory beyond ``max_body_bytes``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence
from urllib.parse import urljoin

import httpx

from crawlcluster import settings
from crawlcluster.errors import BodyTooLarge, FetchError
from crawlcluster.messages import FetchEntry, entry_callback, entry_last_modified
from crawlcluster.netguard import AddressPolicy
from crawlcluster.schema import ROBOTS_CALLBACK
from crawlcluster.settings import Settings
from workers.fetch_errors import describe_http_error, parse_retry_after
from workers.guarded_transport import TrustedClients
from workers.loopthread import cancel_other_tasks, start_loop_thread

logger = logging.getLogger(__name__)

# once a batch's first result is in, how long the rest may take before what is done so far
# is handed on: a page that hangs until its timeout holds none of its batch-mates back
WAVE_LINGER_SECONDS = 0.5

# headers the parse stage and the row need; the rest stay behind
KEPT_HEADERS = ("content-type", "etag", "last-modified", "location", "content-encoding", "retry-after")
# put on a fetch run's result queue when the run itself ends (normally or not)
_RUN_ENDED = object()


@dataclass
class FetchResult:
    """What one fetch gave: a response (``status``, ``body``), a redirect, or an ``error``."""

    entry: FetchEntry
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    redirect_to: str | None = None
    error: FetchError | None = None
    elapsed_seconds: float = 0.0
    wire_bytes: int = 0

    @property
    def url(self) -> str:
        return self.entry["url"]

    @property
    def ok(self) -> bool:
        return self.error is None


class _BoundedDecoder:
    """Content-Encoding decoder that never produces more than ``limit`` bytes in total: past
    it, an error, or with ``cut`` the decoder is ``full`` and decodes nothing more."""

    def __init__(self, url: str, encoding: str, limit: int, cut: bool = False) -> None:
        self.url = url
        self.limit = limit
        self.total = 0
        self.cut = cut
        self.full = False
        encoding = encoding.strip().lower()
        self._fallback_raw_deflate = False
        if encoding in ("", "identity"):
            self._decompressor = None
        elif encoding in ("gzip", "x-gzip"):
            self._decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            # servers send both zlib-wrapped and raw deflate under this name
            self._decompressor = zlib.decompressobj(zlib.MAX_WBITS)
            self._fallback_raw_deflate = True
        else:
            raise FetchError(url, "decode",
                             f"{url} sent Content-Encoding {encoding!r}, which crawlcluster does not decode")

    def _count(self, size: int, compressed: bool) -> None:
        self.total += size
        if self.total > self.limit:
            if not self.cut:
                raise BodyTooLarge(self.url, self.limit, compressed=compressed)
            self.full = True

    def feed(self, data: bytes) -> bytes:
        if self._decompressor is None:
            self._count(len(data), False)
            return data
        if self._decompressor.eof:
            # bytes after the end of the compressed stream: counted (so an endless trailer
            # stops at the limit) but never buffered
            self._count(len(data), True)
            return b""
        out = []
        while data and not self.full:
            try:
                chunk = self._decompressor.decompress(data, self.limit - self.total + 1)
            except zlib.error as exc:
                if self._fallback_raw_deflate and self.total == 0:
                    self._decompressor = zlib.decompressobj(-zlib.MAX_WBITS)
                    self._fallback_raw_deflate = False
                    continue
                raise FetchError(self.url, "decode",
                                 f"body of {self.url} is not valid compressed data: {exc}") from None
            self._fallback_raw_deflate = False
            self._count(len(chunk), True)
            out.append(chunk)
            data = self._decompressor.unconsumed_tail
        return b"".join(out)

    def flush(self) -> bytes:
        if self._decompressor is None:
            return b""
        tail = self._decompressor.flush()
        self._count(len(tail), True)
        return tail


class Fetcher:
    """Fetches requests concurrently; one instance per worker process (see :func:`get_fetcher`)."""

    def __init__(
        self,
        *,
        user_agent: str,
        connect_timeout_seconds: float,
        read_timeout_seconds: float,
        fetch_timeout_seconds: float | None = None,
        max_body_bytes: int,
        concurrency: int,
        policy: AddressPolicy | None = None,
        max_robots_bytes: int | None = None,
    ) -> None:
        self.user_agent = user_agent
        self.policy = policy if policy is not None else AddressPolicy()
        self.timeout = httpx.Timeout(read_timeout_seconds, connect=connect_timeout_seconds)
        self._timeouts = self.timeout.as_dict()
        # what httpx's client sent by default, with our agent and the encodings we decode
        self._headers = httpx.Headers({"Accept": "*/*", "Accept-Encoding": "gzip, deflate",
                                       "Connection": "keep-alive", "User-Agent": user_agent})
        # a whole fetch, connecting to the last body byte: a server that sends a byte now and
        # then never trips the read timeout, and must still end
        self.total_timeout_seconds = (fetch_timeout_seconds if fetch_timeout_seconds is not None
                                      else connect_timeout_seconds + 4 * read_timeout_seconds)
        self.max_body_bytes = max_body_bytes
        # a robots.txt is read this far and no further: what is past it is never parsed, so
        # a robots.txt over max_body_bytes is cut, not failed (which would leave its host
        # unreachable)
        self.max_robots_bytes = max_robots_bytes
        self.concurrency = concurrency
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._clients: TrustedClients | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self._start_lock = threading.Lock()

    @classmethod
    def from_settings(cls, s: Settings) -> "Fetcher":
        return cls(
            user_agent=s.user_agent,
            connect_timeout_seconds=s.connect_timeout_seconds,
            read_timeout_seconds=s.read_timeout_seconds,
            fetch_timeout_seconds=s.fetch_timeout_seconds,
            max_body_bytes=s.max_body_bytes,
            concurrency=s.fetch_concurrency,
            policy=AddressPolicy.from_settings(s),
            max_robots_bytes=s.max_robots_bytes,
        )

    # -- the loop thread ------------------------------------------------------------
    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._start_lock:
            if self._loop is None:
                self._loop, self._thread = start_loop_thread("crawlcluster-fetch-loop")
        return self._loop

    def close(self) -> None:
        """Close the client and stop the loop thread."""
        loop = self._loop
        if loop is None:
            return
        # fetches still in flight (a worker stopping under a hanging page) are cancelled
        # first, so the threads waiting on them get an answer instead of waiting for ever
        asyncio.run_coroutine_threadsafe(cancel_other_tasks(), loop).result(timeout=10)
        if self._clients is not None:
            asyncio.run_coroutine_threadsafe(self._clients.aclose(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._loop = self._thread = self._clients = self._semaphore = None

    def fetch_many(self, entries: list[FetchEntry], trust: Sequence[str] = ()) -> list[FetchResult]:
        """Fetch every entry concurrently (bounded by ``concurrency`` per process) and
        return one result per entry, in order. Never raises for a bad URL or response.
        ``trust`` is the fetch message's: hosts and networks the guard lets these reach."""
        loop = self._ensure_loop()
        future = asyncio.run_coroutine_threadsafe(self._fetch_all(entries, trust), loop)
        return future.result()

    def fetch_waves(self, entries: list[FetchEntry], linger_seconds: float = WAVE_LINGER_SECONDS,
                    trust: Sequence[str] = ()) -> Iterator[list[FetchResult]]:
        """Fetch every entry concurrently, like :meth:`fetch_many`, but hand results on in
        waves as they finish: a wave is whatever finished within ``linger_seconds`` of its
        first result (the whole batch, when every page answers quickly)."""
        loop = self._ensure_loop()
        finished: queue.Queue[Any] = queue.Queue()

        async def run() -> None:
            await self._open_client()

            async def one(entry: FetchEntry) -> None:
                finished.put(await self.fetch(entry, trust))

            await asyncio.gather(*(one(entry) for entry in entries))

        future = asyncio.run_coroutine_threadsafe(run(), loop)
        # the run's end is put on the queue too: a run cancelled by close() (or broken by a
        # bug) ends the wait at once instead of leaving this thread blocked
        future.add_done_callback(lambda _done: finished.put(_RUN_ENDED))
        remaining = len(entries)
        # every fetch ends within its total timeout; the bound only guards against a bug
        most_seconds = self.total_timeout_seconds + 60
        while remaining:
            try:
                first = finished.get(timeout=most_seconds)
            except queue.Empty:
                future.cancel()
                raise RuntimeError(f"{remaining} fetches gave no result within {most_seconds:g}s") from None
            if first is _RUN_ENDED:
                future.result(timeout=0)  # raises what broke the run (CancelledError after close())
                raise RuntimeError(f"the fetch run ended with {remaining} fetches giving no result")
            wave = [first]
            deadline = time.monotonic() + linger_seconds
            while len(wave) < remaining:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    item = finished.get(timeout=left)
                except queue.Empty:
                    break
                if item is _RUN_ENDED:
                    finished.put(item)  # seen again by the next wait, once this wave is handed on
                    break
                wave.append(item)
            remaining -= len(wave)
            yield wave
        future.result(timeout=10)

    async def _open_client(self) -> None:
        if self._clients is None:
            limits = httpx.Limits(max_connections=self.concurrency,
                                  max_keepalive_connections=self.concurrency)
            self._clients = TrustedClients(self.policy, limits)
            self._semaphore = asyncio.Semaphore(self.concurrency)
        # httpcore asks sniffio which async library runs each time a request enters or leaves
        # a connection; sniffio answers from this thread-local first (the loop thread runs
        # asyncio alone) instead of looking the current task up
        if "sniffio" in sys.modules:  # without it installed httpcore assumes asyncio unasked
            sys.modules["sniffio"].thread_local.name = "asyncio"

    async def _fetch_all(self, entries: list[FetchEntry], trust: Sequence[str] = ()) -> list[FetchResult]:
        await self._open_client()
        return list(await asyncio.gather(*(self.fetch(entry, trust) for entry in entries)))

    # -- one fetch ------------------------------------------------------------------
    async def fetch(self, entry: FetchEntry, trust: Sequence[str] = ()) -> FetchResult:
        result = FetchResult(entry)
        started = time.monotonic()
        assert self._semaphore is not None
        async with self._semaphore:
            try:
                # (asyncio.timeout, not wait_for: no task of its own per fetch)
                async with asyncio.timeout(self.total_timeout_seconds):
                    await self._fetch_into(result, trust)
            except FetchError as exc:
                result.error = exc
            except asyncio.TimeoutError:
                result.error = FetchError(entry["url"], "timeout",
                                          f"{entry['url']} took longer than "
                                          f"{self.total_timeout_seconds:g}s in total (fetch_timeout_seconds)")
            except Exception as exc:  # noqa: BLE001 - no input may crash a worker
                result.error = describe_http_error(entry["url"], exc)
        result.elapsed_seconds = time.monotonic() - started
        if result.error is not None:
            result.body = b""
            if result.error.status_code is None:
                result.error.status_code = result.status
        return result

    async def _fetch_into(self, result: FetchResult, trust: Sequence[str]) -> None:
        url = result.entry["url"]
        options = result.entry.get("fetch") or {}
        headers = dict(options.get("headers") or {})
        if options.get("cookies"):
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in options["cookies"].items())
        if result.entry.get("etag"):
            headers.setdefault("If-None-Match", result.entry["etag"])
        if last_modified := entry_last_modified(result.entry):
            headers.setdefault("If-Modified-Since", last_modified)
        timeout = httpx.Timeout(options["timeout"]).as_dict() if options.get("timeout") else self._timeouts
        merged = self._headers.copy()
        merged.update(headers)
        request = httpx.Request(options.get("method", "GET"), url, headers=merged,
                                content=options.get("body"), extensions={"timeout": timeout})
        assert self._clients is not None
        key = self._clients.key_for(request.url, trust)
        transport = self._clients.acquire(key)
        try:
            await self._send(transport, result, request)
        finally:
            await self._clients.release(key)

    async def _send(self, transport: httpx.AsyncBaseTransport, result: FetchResult,
                    request: httpx.Request) -> None:
        url = result.url
        response = await transport.handle_async_request(request)
        try:
            result.status = response.status_code
            result.headers = {k: response.headers[k] for k in KEPT_HEADERS if k in response.headers}
            if response.is_redirect and "location" in response.headers:
                result.redirect_to = urljoin(url, response.headers["location"])
                return
            if response.status_code == 304:  # not modified since the stored ETag/Last-Modified
                return
            if not 200 <= response.status_code < 300:
                error = FetchError(url, "http",
                                   f"HTTP {response.status_code} {response.reason_phrase}".strip(),
                                   response.status_code)
                error.retry_after_seconds = parse_retry_after(response.headers.get("retry-after"))
                raise error
            robots = entry_callback(result.entry) == ROBOTS_CALLBACK and self.max_robots_bytes is not None
            # one byte past the bound, so the parse stage sees it was over and cuts at a line's end
            cut_at = self.max_robots_bytes + 1 if robots and self.max_robots_bytes is not None else None
            result.body, result.wire_bytes = await self._read_body(url, response, cut_at)
        finally:
            await response.aclose()

    async def _read_body(self, url: str, response: httpx.Response,
                         cut_at: int | None = None) -> tuple[bytes, int]:
        """The body, decoded, and the bytes it took on the wire. Over ``max_body_bytes`` it is
        an error; with ``cut_at`` (a robots.txt) reading stops there and the rest is dropped."""
        declared = response.headers.get("content-length", "")
        encoding = response.headers.get("content-encoding", "")
        if cut_at is None and declared.isdigit() and not encoding and int(declared) > self.max_body_bytes:
            raise BodyTooLarge(url, self.max_body_bytes)
        cut = cut_at is not None
        decoder = _BoundedDecoder(url, encoding, cut_at if cut_at is not None else self.max_body_bytes, cut)
        chunks = []
        wire = 0
        assert isinstance(response.stream, httpx.AsyncByteStream)
        async for raw in response.stream:
            wire += len(raw)
            chunks.append(decoder.feed(raw))
            if decoder.full:
                return b"".join(chunks)[:cut_at], wire
        chunks.append(decoder.flush())
        body = b"".join(chunks)
        return (body[:cut_at] if cut_at is not None else body), wire


_fetchers: dict[int, Fetcher] = {}
_fetchers_lock = threading.Lock()


def get_fetcher() -> Fetcher:
    """This process's fetcher (a new one after a fork)."""
    pid = os.getpid()
    fetcher = _fetchers.get(pid)
    if fetcher is None:
        with _fetchers_lock:
            fetcher = _fetchers.get(pid)
            if fetcher is None:
                fetcher = _fetchers[pid] = Fetcher.from_settings(settings.current())
    return fetcher


def close_fetcher() -> None:
    fetcher = _fetchers.pop(os.getpid(), None)
    if fetcher is not None:
        fetcher.close()
