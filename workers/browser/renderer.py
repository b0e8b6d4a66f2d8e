"""The render engine: one headless Chromium per worker process, driven by pyppeteer on an
asyncio loop thread, a bounded number of pages in flight, and a browser that never leaks.

pyspider's PhantomJS tier grew until it was restarted by hand; this one recycles its
browser after ``recycle_pages`` pages or when the browser's process tree passes
``max_pss_bytes`` (PSS, see ``proctree.py``), kills and replaces a browser that
crashed or stopped answering (and renders the page it lost once more, on the fresh
browser), and on :meth:`Renderer.close` leaves no Chromium process behind. Chromium is
started by ``chromium.py``, not by pyppeteer, so that it runs in its own process group,
as an unprivileged user with its sandbox, with nothing of the worker's environment, and
dies with the worker even when the worker is killed; pyppeteer drives it over a pipe
(``devtools_pipe.py``). Every request it makes goes through a guard proxy
(``guard_proxy.py``) on this loop: the browser's own with the cluster's policy, and one
per page, in a browser context of its own, trusting the page's project hosts. The steps
of one page are in ``page.py``. Nothing is downloaded: ``chromium_path`` must exist.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import shutil
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Iterable

from crawlcluster import settings
from crawlcluster.errors import ConfigurationError, FetchError
from crawlcluster.messages import FetchEntry
from crawlcluster.netguard import AddressPolicy
from crawlcluster.rendering import RenderOptions
from crawlcluster.settings import Settings
from workers.browser.guard_proxy import GuardProxy
from workers.browser.handle import BrowserHandle, connect_browser, start_browser
from workers.browser.proctree import TreeMemory, descendants, kill_tree, tree_memory
from workers.browser.result import BrowserLost, RenderResult
from workers.loopthread import cancel_other_tasks, start_loop_thread

logger = logging.getLogger(__name__)

# a browser that answers nothing this long past a page's timeout is hung: kill it
HUNG_GRACE_SECONDS = 10.0
CLOSE_TIMEOUT_SECONDS = 5.0
MEMORY_CHECK_SECONDS = 1.0


@dataclass
class RenderCounters:
    """Per-process counters, written to the ``render_workers`` table by the render task."""

    browsers_launched: int = 0
    pages_rendered: int = 0
    render_failures: int = 0
    recycles: int = 0
    crashes: int = 0
    hung_kills: int = 0
    refused_requests: int = 0  # subresources the guard proxy refused


def _quiet_pyppeteer_leftovers(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    # pyppeteer drops futures of calls to pages that closed under them; they are expected
    exc = context.get("exception")
    if exc is not None and type(exc).__module__.startswith("pyppeteer"):
        logger.debug("pyppeteer: %s", exc)
        return
    loop.default_exception_handler(context)


class Renderer:
    """Renders entries in this process's browser; one instance per process (:func:`get_renderer`)."""

    def __init__(self, *, chromium_path: str, pages_in_flight: int, recycle_pages: int, max_pss_bytes: int,
                 page_timeout_seconds: float, launch_timeout_seconds: float, user_agent: str,
                 hung_grace_seconds: float = HUNG_GRACE_SECONDS, policy: AddressPolicy | None = None,
                 user: str = "", sandbox: bool = True) -> None:
        self.chromium_path = chromium_path
        self.policy = policy if policy is not None else AddressPolicy()
        self.user = user
        self.sandbox = sandbox
        self.pages_in_flight = pages_in_flight
        self.recycle_pages = recycle_pages
        self.max_pss_bytes = max_pss_bytes
        self.page_timeout_seconds = page_timeout_seconds
        self.launch_timeout_seconds = launch_timeout_seconds
        self.user_agent = user_agent
        self.hung_grace_seconds = hung_grace_seconds
        self.counters = RenderCounters()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._current: BrowserHandle | None = None
        self._all: set[BrowserHandle] = set()
        self._slots: asyncio.Semaphore | None = None
        self._launch_lock: asyncio.Lock | None = None

    @classmethod
    def from_settings(cls, s: Settings) -> "Renderer":
        return cls(
            chromium_path=s.chromium_path,
            pages_in_flight=s.render_pages_in_flight,
            recycle_pages=s.render_recycle_pages,
            max_pss_bytes=s.render_max_pss_bytes,
            page_timeout_seconds=s.render_page_timeout_seconds,
            launch_timeout_seconds=s.render_launch_timeout_seconds,
            user_agent=s.user_agent,
            policy=AddressPolicy.from_settings(s),
            user=s.browser_user,
            sandbox=s.browser_sandbox,
        )

    # -- what callers see ----------------------------------------------------------------
    @property
    def browser_pid(self) -> int | None:
        current = self._current
        return current.pid if current is not None and not current.retiring else None

    def memory(self) -> TreeMemory:
        """PSS and summed RSS of the current browser's process tree (zeros with none)."""
        pid = self.browser_pid
        return tree_memory(descendants(pid)) if pid else TreeMemory(0, 0, 0)

    def stats(self) -> dict[str, Any]:
        memory = self.memory()
        return {**asdict(self.counters), "browser_pid": self.browser_pid,
                "browser_pss_bytes": memory.pss_bytes, "browser_rss_bytes": memory.rss_bytes}

    def render_many(self, entries: list[FetchEntry], trust: Iterable[str] = ()) -> list[RenderResult]:
        """Render every entry (at most ``pages_in_flight`` at once) and return one result
        per entry, in order; the pages may reach what the cluster's policy allows and what
        ``trust`` names (their project's start hosts and allow_private: a message's
        ``trust``). Never raises for a bad page, a crash or a hang."""
        loop = self._ensure_loop()
        policy = self.policy.trusting(trust)
        return asyncio.run_coroutine_threadsafe(self._render_all(entries, policy), loop).result()

    def close(self) -> None:
        """Close every browser (waiting for its processes) and stop the loop thread."""
        loop = self._loop
        if loop is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._close_all(), loop).result(timeout=60)
        except Exception:  # noqa: BLE001 - whatever happens, nothing may outlive the worker
            logger.exception("closing the browser failed; killing it")
            for handle in list(self._all):
                kill_tree(handle.pid, handle.pid)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._loop = self._thread = None

    # -- the loop thread ---------------------------------------------------------------
    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._start_lock:
            if self._loop is None:
                # the browser is this thread's child: PR_SET_PDEATHSIG follows the thread
                self._loop, self._thread = start_loop_thread("crawlcluster-render-loop",
                                                             _quiet_pyppeteer_leftovers)
        return self._loop

    async def _render_all(self, entries: list[FetchEntry], policy: AddressPolicy) -> list[RenderResult]:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.pages_in_flight)
            self._launch_lock = asyncio.Lock()
        return list(await asyncio.gather(*(self._render_one(entry, policy) for entry in entries)))

    async def _render_one(self, entry: FetchEntry, policy: AddressPolicy) -> RenderResult:
        # the page steps; pyppeteer only on render workers
        from workers.browser.page import PagePool, render_page

        url = entry["url"]
        result = RenderResult(entry)
        started = time.monotonic()
        try:
            options = RenderOptions.from_dict((entry.get("fetch") or {}).get("render_options"))
        except ConfigurationError as exc:
            result.error = FetchError(url, "invalid_options", f"cannot render {url}: {exc}")
            return result
        timeout = options.timeout_seconds or self.page_timeout_seconds
        assert self._slots is not None
        async with self._slots:
            for attempt in (1, 2):
                result = RenderResult(entry, attempts=attempt)
                try:
                    handle = await self._acquire()
                except FetchError as exc:
                    result.error = FetchError(url, exc.kind, f"cannot render {url}: {exc}")
                    break
                refused_before = 0
                proxy: GuardProxy | None = None
                try:
                    context, guard = await asyncio.wait_for(handle.context_for(policy), timeout)
                    proxy, refused_before = guard, guard.refusals
                    pool = handle.page_pool = handle.page_pool or PagePool(self.pages_in_flight)
                    await self._guarded(handle, render_page(context, guard, entry, options, timeout,
                                                            self.user_agent, result, pool), timeout)
                    break
                except BrowserLost as lost:
                    self._lose(handle, lost.kind, str(lost))
                    if attempt == 2:
                        result.error = FetchError(url, lost.kind,
                                                  f"browser {'crashed' if lost.kind == 'crash' else 'hung'} "
                                                  f"rendering {url} ({lost}), also on a fresh browser")
                    else:
                        logger.warning("browser %s rendering %s (%s); rendering it again on a fresh browser",
                                       lost.kind, url, lost)
                except Exception as exc:  # noqa: BLE001 - no page may crash a worker
                    result.error = FetchError(url, "render",
                                              f"rendering {url} failed: {type(exc).__name__}: {exc}")
                    break
                finally:
                    if proxy is not None:
                        self._count_refusals(proxy.refusals - refused_before, result)
                    self._release(handle)
        result.elapsed_seconds = time.monotonic() - started
        if result.error is None:
            self.counters.pages_rendered += 1
        else:
            self.counters.render_failures += 1
            result.body, result.screenshot = b"", None
        return result

    def _count_refusals(self, refused: int, result: RenderResult) -> None:
        """Count the subresources the proxy refused while the page rendered (the proxy logs
        each refused host once)."""
        main_refused = result.error is not None and result.error.kind == "refused"
        self.counters.refused_requests += max(0, refused - (1 if main_refused else 0))

    async def _guarded(self, handle: BrowserHandle, work: Any, timeout: float) -> None:
        """Run one page's steps, racing them against the browser's death and a hang."""
        task = asyncio.ensure_future(work)
        died = asyncio.ensure_future(handle.dead.wait())
        try:
            done, _ = await asyncio.wait({task, died}, timeout=timeout + self.hung_grace_seconds,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            died.cancel()
        if task in done:
            exc = task.exception()
            if exc is None:
                return
            if isinstance(exc, BrowserLost):
                raise exc
            # a closed connection is usually the first sign of a dead browser; wait for the proof
            try:
                await asyncio.wait_for(handle.dead.wait(), 2.0)
            except asyncio.TimeoutError:
                raise exc from None
            raise BrowserLost("crash",
                              f"Chromium (pid {handle.pid}) exited with {handle.proc.returncode}: {exc}")
        task.cancel()
        if handle.dead.is_set():
            raise BrowserLost("crash", f"Chromium (pid {handle.pid}) exited with {handle.proc.returncode}")
        raise BrowserLost("hung",
                          f"no answer from Chromium (pid {handle.pid}) for "
                          f"{timeout + self.hung_grace_seconds:.0f}s")

    # -- the browser's life --------------------------------------------------------------
    async def _acquire(self) -> BrowserHandle:
        """The browser a new page goes to: launched when there is none, replaced first when
        it is due for recycling (after its pages in flight finished, so that only one
        browser's memory is ever held)."""
        assert self._launch_lock is not None
        async with self._launch_lock:
            current = self._current
            if current is not None:
                if current.dead.is_set():
                    self._lose(current, "crash",
                               f"Chromium (pid {current.pid}) exited with {current.proc.returncode}")
                elif self._due_for_recycling(current):
                    self.counters.recycles += 1
                    logger.info("recycling Chromium pid %s after %d pages (%s)", current.pid,
                                current.pages_opened, current.memory)
                    self._current = None
                    current.retiring = True
                    if current.in_flight == 0:
                        await self._shutdown(current)
                    await current.closed.wait()
            if self._current is None:
                self._current = await self._launch()
            handle = self._current
            handle.in_flight += 1
            handle.pages_opened += 1
            return handle

    def _release(self, handle: BrowserHandle) -> None:
        handle.in_flight -= 1
        if handle.retiring and handle.in_flight == 0 and not handle.shutting_down:
            asyncio.ensure_future(self._shutdown(handle))

    def _due_for_recycling(self, handle: BrowserHandle) -> bool:
        if self.recycle_pages and handle.pages_opened >= self.recycle_pages:
            return True
        now = time.monotonic()
        if self.max_pss_bytes and now - handle.memory_checked_at >= MEMORY_CHECK_SECONDS:
            handle.memory = tree_memory(descendants(handle.pid))
            handle.memory_checked_at = now
            return handle.memory.pss_bytes > self.max_pss_bytes
        return False

    def _lose(self, handle: BrowserHandle, kind: str, detail: str) -> None:
        """Count a crashed or hung browser once, kill its whole tree, and stop using it."""
        if handle.lost:
            return
        handle.lost = True
        if not handle.retiring or not handle.dead.is_set():
            if kind == "hung":
                self.counters.hung_kills += 1
            else:
                self.counters.crashes += 1
            logger.error("Chromium pid %s %s (%s); killing it and starting a fresh one", handle.pid,
                         "hung" if kind == "hung" else "crashed", detail)
        if self._current is handle:
            self._current = None
        handle.retiring = True
        kill_tree(handle.pid, handle.pid)
        if handle.in_flight == 0 and not handle.shutting_down:
            asyncio.ensure_future(self._shutdown(handle))

    async def _launch(self) -> BrowserHandle:
        handle = await start_browser(self.chromium_path, self.policy, self.user, self.sandbox)
        self._all.add(handle)
        try:
            await connect_browser(handle, self.chromium_path, self.sandbox, self.launch_timeout_seconds)
        except BaseException as exc:
            if isinstance(exc, FetchError):
                logger.error("%s", exc)  # one line when it is the sandbox
            handle.retiring = handle.lost = True
            await self._shutdown(handle)
            raise
        self.counters.browsers_launched += 1
        logger.info("started Chromium pid %s as %s, sandbox %s, DevTools over a pipe, guard proxy %s",
                    handle.pid, handle.chromium.user.name, "on" if self.sandbox else "OFF (unsafe)",
                    handle.proxy.url)
        return handle

    async def _shutdown(self, handle: BrowserHandle) -> None:
        """Close one browser for good: politely, then by force; wait for every process."""
        if handle.shutting_down:
            await handle.closed.wait()
            return
        handle.shutting_down = True
        handle.retiring = True
        if self._current is handle:
            self._current = None
        if handle.browser is not None and not handle.dead.is_set():
            try:
                await asyncio.wait_for(handle.browser.close(), CLOSE_TIMEOUT_SECONDS)
            except Exception:  # noqa: BLE001 - it is killed below
                pass
        try:
            await asyncio.wait_for(handle.dead.wait(), CLOSE_TIMEOUT_SECONDS)
        except asyncio.TimeoutError:
            logger.warning("Chromium pid %s did not exit when closed; killing it", handle.pid)
        # helpers outlive the main process for a moment; its process group holds them all
        kill_tree(handle.pid, handle.pid)
        await asyncio.wait_for(handle.dead.wait(), CLOSE_TIMEOUT_SECONDS)
        if handle.browser is not None:
            try:
                await asyncio.wait_for(handle.browser._connection.dispose(), CLOSE_TIMEOUT_SECONDS)
            except Exception:  # noqa: BLE001 - the connection is gone with the browser
                pass
        await handle.close_proxies()
        shutil.rmtree(handle.user_data_dir, ignore_errors=True)
        self._all.discard(handle)
        handle.closed.set()

    async def _close_all(self) -> None:
        for handle in list(self._all):
            await self._shutdown(handle)
        # pyppeteer leaves timers behind; end them before the loop stops
        await cancel_other_tasks()


_renderers: dict[int, Renderer] = {}
_renderers_lock = threading.Lock()


def get_renderer() -> Renderer:
    """This process's renderer (a new one after a fork); its browser starts on first use."""
    pid = os.getpid()
    renderer = _renderers.get(pid)
    if renderer is None:
        with _renderers_lock:
            renderer = _renderers.get(pid)
            if renderer is None:
                renderer = _renderers[pid] = Renderer.from_settings(settings.current())
                # the embedded crawl and scripts exit without Celery's shutdown signals
                atexit.register(close_renderer)
    return renderer


def close_renderer() -> None:
    """Close this process's browser, if it started one (worker shutdown)."""
    renderer = _renderers.pop(os.getpid(), None)
    if renderer is not None:
        renderer.close()
