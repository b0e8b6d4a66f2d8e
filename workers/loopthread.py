"""An asyncio loop running in a daemon thread: how the fetch and render engines keep their
async clients alive across Celery's synchronous task calls."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable


def start_loop_thread(name: str, exception_handler: Callable[..., Any] | None = None
                      ) -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
    """A new event loop, already running in thread ``name`` when this returns."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        if exception_handler is not None:
            loop.set_exception_handler(exception_handler)
        loop.call_soon(ready.set)
        loop.run_forever()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    ready.wait()
    return loop, thread


async def cancel_other_tasks() -> None:
    """Cancel every task on the running loop but the caller's, and wait until they have
    ended: what an engine does before its loop stops, so that no task (a fetch under a
    hanging page, a timer pyppeteer left behind) is left pending and nobody waits on it."""
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)
