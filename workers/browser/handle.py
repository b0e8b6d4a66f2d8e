"""One running browser as the renderer holds it: started (its guard proxy, its Chromium
process, a watcher for its exit) and connected over the DevTools pipe, or a readable
reason why it could not be (the sandbox line, Chromium's last words, a launch timeout);
and its browser contexts, one per address policy (per project trust), each with a guard
proxy of its own. Used by ``renderer.py``, which owns the handles and closes them.

A context per policy rather than per page: a fresh context per page starts fresh renderer
processes for every page (measured: a batch of 5 pages took 2.5 times as long), while the
pages of one project may share cookies and processes as they did in one default context.
Contexts and their proxies live as long as their browser (recycled after
``render_recycle_pages`` pages), so their number is bounded by the projects it served.
"""

from __future__ import annotations

import asyncio
import subprocess
from typing import Any

from crawlcluster.netguard import AddressPolicy
from workers.browser.chromium import ChromiumProcess, browser_user, start_chromium, startup_failure
from workers.browser.guard_proxy import GuardProxy
from workers.browser.proctree import TreeMemory


class BrowserHandle:
    """One running Chromium: its process, proxy, pyppeteer connection and page counts."""

    def __init__(self, chromium: ChromiumProcess, proxy: GuardProxy) -> None:
        self.chromium = chromium
        self.proc: subprocess.Popen = chromium.proc
        self.pid = chromium.proc.pid
        self.user_data_dir = chromium.user_data_dir
        self.proxy = proxy  # the browser's own requests (no page's context): the cluster's policy
        self.browser: Any = None
        self.pages_opened = 0
        self.in_flight = 0
        self.retiring = False  # no new pages; closed once the last one finishes
        self.lost = False  # crashed or hung, already counted and killed
        self.shutting_down = False
        self.dead = asyncio.Event()  # the main process exited
        self.closed = asyncio.Event()  # every process waited for, profile removed
        self.memory = TreeMemory(0, 0, 0)
        self.memory_checked_at = 0.0
        self._contexts: dict[tuple[bool, tuple[str, ...]], asyncio.Future] = {}
        self.page_pool: Any = None  # open pages kept between renders (page.PagePool), of every context

    async def context_for(self, policy: AddressPolicy) -> tuple[Any, GuardProxy]:
        """The browser context (and its guard proxy) whose requests ``policy`` decides."""
        key = (policy.enabled, policy.allow)
        made = self._contexts.get(key)
        if made is None:
            made = self._contexts[key] = asyncio.ensure_future(self._open_context(policy))
        try:
            return await asyncio.shield(made)
        except BaseException:
            if made.done() and (made.cancelled() or made.exception() is not None):
                self._contexts.pop(key, None)
            raise

    async def _open_context(self, policy: AddressPolicy) -> tuple[Any, GuardProxy]:
        from pyppeteer.browser import BrowserContext

        proxy = await GuardProxy(policy, label="context").start()
        try:
            created = await self.browser._connection.send("Target.createBrowserContext", {
                "disposeOnDetach": True, "proxyServer": proxy.url, "proxyBypassList": "<-loopback>"})
        except BaseException:
            await proxy.close()
            raise
        context = BrowserContext(self.browser, created["browserContextId"])
        self.browser._contexts[created["browserContextId"]] = context
        return context, proxy

    async def close_proxies(self) -> None:
        """Close every proxy of this browser (when the browser is gone)."""
        for made in list(self._contexts.values()):
            if made.done() and not made.cancelled() and made.exception() is None:
                await made.result()[1].close()
            else:
                made.cancel()
        self._contexts.clear()
        await self.proxy.close()


async def start_browser(chromium_path: str, policy: AddressPolicy, user_setting: str,
                        sandbox: bool) -> BrowserHandle:
    """Start the browser's guard proxy and Chromium behind it; ``dead`` is set when it exits."""
    user = browser_user(user_setting)
    proxy = await GuardProxy(policy).start()
    try:
        chromium = start_chromium(chromium_path, proxy_url=proxy.url, user=user, sandbox=sandbox)
    except BaseException:
        await proxy.close()
        raise
    handle = BrowserHandle(chromium, proxy)
    loop = asyncio.get_running_loop()
    waited = loop.run_in_executor(None, handle.proc.wait)
    waited.add_done_callback(lambda _f: loop.call_soon_threadsafe(handle.dead.set))
    return handle


async def connect_browser(handle: BrowserHandle, chromium_path: str, sandbox: bool,
                          timeout_seconds: float) -> None:
    """Connect pyppeteer over the pipe; raise a readable FetchError if Chromium exits or is late."""
    # imported here: fetch, parse and store nodes need no pyppeteer
    from workers.browser.devtools_pipe import connect_over_pipe

    chromium = handle.chromium
    connecting = asyncio.ensure_future(connect_over_pipe(chromium.to_browser, chromium.from_browser))
    died = asyncio.ensure_future(handle.dead.wait())
    await asyncio.wait({connecting, died}, timeout=timeout_seconds, return_when=asyncio.FIRST_COMPLETED)
    died.cancel()
    if connecting.done() and connecting.exception() is None:
        handle.browser = connecting.result()
        return
    if connecting.done():  # the pipe closed: the browser is exiting
        await asyncio.wait({asyncio.ensure_future(handle.dead.wait())}, timeout=5)
    connecting.cancel()
    detail = (f"exited with {handle.proc.returncode} while starting" if handle.dead.is_set() else
              f"did not start within {timeout_seconds:.0f}s (render_launch_timeout_seconds)")
    raise startup_failure(chromium, chromium_path, sandbox, detail)
