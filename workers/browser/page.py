"""One page in the browser, step by step: open (in its project's browser context, whose
requests all go through that context's guard proxy), navigate, wait, run the script,
screenshot, read the HTML, close. Used by ``renderer.py``, which owns the browser.

Every step shares one deadline (the page timeout), and every way a page can go wrong
(timeout, navigation error, HTTP error status, a script that throws, a main frame the
address guard refused) becomes the result's ``error`` with a sentence naming the URL.
Only a lost browser (a closed connection, or a page that cannot even be closed) is
raised, for the renderer to replace the browser.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from pyppeteer.errors import ElementHandleError, PageError
from pyppeteer.errors import TimeoutError as PyppeteerTimeout

from crawlcluster.errors import FetchError
from crawlcluster.messages import FetchEntry
from crawlcluster.rendering import WAIT_UNTIL, RenderOptions
from workers.browser.guard_proxy import GuardProxy
from workers.browser.result import BrowserLost, RenderResult

logger = logging.getLogger(__name__)

BLOCKED_RESOURCE_TYPES = ("Image", "Font", "Media")
PAGE_CLOSE_TIMEOUT_SECONDS = 5.0
HTML_TYPES = ("text/html", "application/xhtml+xml", "")


async def _block_resources(page: Any, load_images: bool, fresh: bool) -> None:
    """Fail the favicon, and unless ``load_images`` images, fonts and media, before they are
    requested: most of a page's bytes and none of its HTML, and one request less per page
    for the site. (The Fetch domain: Chromium dropped Network.setRequestInterception.) The
    handler is installed once per page (``fresh``); the patterns are set for every render."""
    client = page._client
    patterns = [{"urlPattern": "*/favicon.ico", "requestStage": "Request"}]
    if not load_images:
        patterns += [{"urlPattern": "*", "resourceType": kind, "requestStage": "Request"}
                     for kind in BLOCKED_RESOURCE_TYPES]

    async def fail(event: dict[str, Any]) -> None:
        try:
            await client.send("Fetch.failRequest",
                              {"requestId": event["requestId"], "errorReason": "BlockedByClient"})
        except Exception:  # noqa: BLE001 - the page closed first
            pass

    if fresh:
        client.on("Fetch.requestPaused", lambda event: asyncio.ensure_future(fail(event)))
    await client.send("Fetch.enable", {"patterns": patterns})


class PagePool:
    """Open pages of one browser kept between renders, at most ``size`` (the renderer's pages
    in flight) over all its browser contexts.

    Opening a page in a browser context of our own (one per project trust, each behind its
    guard proxy) costs Chromium a new renderer process: measured 440 ms median of a 890 ms
    page with one page in flight, against 90-180 ms to navigate an open page. So a page
    that rendered without trouble is kept, frozen (``Page.setWebLifecycleState``: its
    scripts, timers and their requests stop while it waits), and the next page of the same
    context navigates it; a page that failed, timed out or opened a dialog is closed, and
    so is the oldest kept page when the pool is full (each holds a renderer process).
    Every request still goes through its context's guard proxy."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._idle: list[tuple[Any, Any]] = []  # (context, page), oldest first

    async def take(self, context: Any, timeout: float) -> tuple[Any, bool]:
        """``(page, fresh)``: an idle page of ``context`` woken up, or a new one."""
        while True:
            mine = [kept for kept in self._idle if kept[0] is context]
            if not mine:
                break
            self._idle.remove(mine[-1])
            page = mine[-1][1]
            try:
                await asyncio.wait_for(page._client.send("Page.setWebLifecycleState", {"state": "active"}),
                                       PAGE_CLOSE_TIMEOUT_SECONDS)
                return page, False
            except Exception:  # noqa: BLE001 - a page that cannot wake is closed; a new one is opened
                _close_later(page)
        return await asyncio.wait_for(context.newPage(), timeout), True

    async def give_back(self, context: Any, page: Any) -> bool:
        """Keep ``page`` of ``context`` for a next render (frozen); True when kept."""
        if self.size <= 0 or page.isClosed():
            return False
        try:
            await asyncio.wait_for(page._client.send("Page.setWebLifecycleState", {"state": "frozen"}),
                                   PAGE_CLOSE_TIMEOUT_SECONDS)
        except Exception:  # noqa: BLE001 - closed by the caller instead
            return False
        self._idle.append((context, page))
        while len(self._idle) > self.size:
            _context, oldest = self._idle.pop(0)
            _close_later(oldest)
        return True


def _close_later(page: Any) -> None:
    """Close an idle page without holding up (or failing) the render at hand: a browser too
    slow to close it is found hung by a page that waits on it, not by this one."""
    async def close() -> None:
        try:
            await asyncio.wait_for(page.close(), PAGE_CLOSE_TIMEOUT_SECONDS)
        except Exception:  # noqa: BLE001 - see above
            pass

    asyncio.ensure_future(close())


async def _close(page: Any, what: str) -> None:
    """Close ``page``; one that does not close in time means a lost browser."""
    try:
        await asyncio.wait_for(page.close(), PAGE_CLOSE_TIMEOUT_SECONDS)
    except asyncio.TimeoutError:
        raise BrowserLost("hung", f"{what} did not close within {PAGE_CLOSE_TIMEOUT_SECONDS:g}s") from None
    except Exception:  # noqa: BLE001 - a dead browser is found by the renderer
        pass


def proxy_failure(url: str, guard: GuardProxy, main_requests: list[str]) -> FetchError | None:
    """The error of a page whose main frame (or its last redirect) the guard refused, or
    whose host the proxy could not resolve or connect to (the browser saw only the proxy):
    called when the main document is the proxy's own answer, or navigation failed."""
    requested = main_requests[-1] if main_requests else url  # the last hop of its redirects
    where = "" if requested == url else f" (redirected to {requested})"
    why = guard.was_refused(requested)
    if why is not None:
        return FetchError(url, "refused", f"the address guard refused the page {url}{where}: {why}")
    unreachable = guard.could_not_reach(requested)
    if unreachable is not None:
        return FetchError(url, unreachable[0], f"rendering {url}{where}: {unreachable[1]}")
    return None


async def render_page(context: Any, guard: GuardProxy, entry: FetchEntry, options: RenderOptions,
                      timeout: float, user_agent: str, result: RenderResult, pool: PagePool) -> None:
    """Render ``entry`` in a page of the browser ``context`` (from its ``pool``, or new) into
    ``result``; ``guard`` is the context's proxy."""
    url = entry["url"]
    deadline = time.monotonic() + timeout

    def remaining() -> float:
        return max(0.001, deadline - time.monotonic())

    def too_slow(step: str) -> FetchError:
        return FetchError(url, "timeout", f"render timeout: {url} took longer than {timeout:g}s ({step})")

    try:
        page, fresh = await pool.take(context, remaining())
    except asyncio.TimeoutError:  # Chromium could not open a page in time (a loaded machine)
        result.error = too_slow("opening a page")
        return
    documents: list[Any] = []
    main_requests: list[str] = []
    dialogs: list[Any] = []

    def on_response(r: Any) -> None:
        if r.request.resourceType == "document" and r.request.frame is page.mainFrame:
            documents.append(r)

    def on_request(r: Any) -> None:
        if r.resourceType == "document" and r.frame is page.mainFrame:
            main_requests.append(r.url)

    listeners = {"response": on_response, "request": on_request, "dialog": dialogs.append}
    try:
        fetch = entry.get("fetch") or {}
        await page.setViewport({"width": options.viewport[0], "height": options.viewport[1]})
        await page.setUserAgent((fetch.get("headers") or {}).get("User-Agent", user_agent))
        if fetch.get("headers") or not fresh:  # a kept page forgets the last render's headers
            await page.setExtraHTTPHeaders({k: v for k, v in (fetch.get("headers") or {}).items()
                                            if k.lower() != "user-agent"})
        if fetch.get("cookies"):
            await page.setCookie(*({"name": k, "value": str(v), "url": url}
                                   for k, v in fetch["cookies"].items()))
        await _block_resources(page, options.load_images, fresh)
        for event, listener in listeners.items():
            page.on(event, listener)

        try:
            response = await page.goto(url, waitUntil=WAIT_UNTIL[options.wait_until],
                                       timeout=remaining() * 1000)
        except PyppeteerTimeout:
            result.error = FetchError(url, "timeout", f"render timeout: {url} did not reach "
                                      f"'{options.wait_until}' within {timeout:g}s")
            return
        except PageError as exc:
            result.error = proxy_failure(url, guard, main_requests) or FetchError(
                url, "navigation", f"navigation to {url} failed in the browser: {exc}")
            return
        main = documents[-1] if documents else response
        if main is not None and "x-crawlcluster-guard" in {k.lower() for k in main.headers}:
            result.error = proxy_failure(url, guard, main_requests)  # the proxy's 403 or 502
            if result.error is not None:
                return
        result.status = main.status if main is not None else 200
        result.headers = {k.lower(): v for k, v in (main.headers if main is not None else {}).items()
                          if k.lower() in ("content-type", "etag", "last-modified")}
        if not 200 <= result.status < 300:
            result.error = FetchError(url, "http", f"HTTP {result.status} (rendered)", result.status)
            return

        if isinstance(options.wait_for, str):
            try:
                await page.waitForSelector(options.wait_for, timeout=remaining() * 1000)
            except PyppeteerTimeout:
                result.error = FetchError(url, "timeout",
                                          f"render timeout: {options.wait_for!r} did not appear "
                                          f"on {url} within {timeout:g}s")
                return
        elif options.wait_for is not None:
            if options.wait_for / 1000 > remaining():
                result.error = too_slow(f"wait_for={options.wait_for} ms")
                return
            await asyncio.sleep(options.wait_for / 1000)

        try:
            if options.js_script:
                try:
                    result.js_result = await asyncio.wait_for(page.evaluate(options.js_script), remaining())
                except ElementHandleError as exc:
                    result.error = FetchError(url, "script", f"js_script failed on {url}: {exc}")
                    return
            if options.screenshot:
                result.screenshot = await asyncio.wait_for(page.screenshot(type="png"), remaining())
            content_type = result.headers.get("content-type", "").split(";")[0].strip().lower()
            if content_type in HTML_TYPES or main is None:
                html = await asyncio.wait_for(page.content(), remaining())
                result.body = html.encode("utf-8")
                result.headers["content-type"] = "text/html; charset=utf-8"  # the DOM, serialised as UTF-8
            else:
                result.body = await asyncio.wait_for(main.buffer(), remaining())  # a PDF, an image: as sent
        except asyncio.TimeoutError:
            result.error = too_slow("after load")
            return
        result.final_url = page.url
    finally:
        for event, listener in listeners.items():
            page.remove_listener(event, listener)
        # only a page that rendered without trouble is kept; the others are closed
        kept = result.error is None and not dialogs and result.final_url is not None
        if not kept or not await pool.give_back(context, page):
            await _close(page, f"a page of {url}")
