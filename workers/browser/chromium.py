"""Starting one headless Chromium process for the render engine, without pyppeteer's launcher.

Chromium is started here so that it runs in a process group of its own (the whole tree can
be killed at once, even helpers already re-parented), dies with the thread that started it
(``PR_SET_PDEATHSIG``, so a worker killed with SIGKILL takes its browser along), carries
``CRAWLCLUSTER_BROWSER_OWNER=<worker pid>`` in its environment (inherited by every helper,
so tests and operators can find them), and writes its output to a log in its own profile
directory. pyppeteer then connects to the DevTools endpoint it announces.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from crawlcluster.errors import FetchError

BROWSER_OWNER_ENV = "CRAWLCLUSTER_BROWSER_OWNER"
# as root Chromium needs --no-sandbox; the background-networking flags keep it from calling
# home (refused on a closed network, which breaks its own connections)
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--mute-audio", "--hide-scrollbars", "--remote-debugging-port=0",
)
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def start_chromium(chromium_path: str) -> tuple[subprocess.Popen, str]:
    """Start Chromium with a fresh profile directory; return the process and the directory
    (the caller removes it when the browser is gone)."""
    if not os.access(chromium_path, os.X_OK):
        raise FetchError("", "browser", f"Chromium at {chromium_path} is not an executable; "
                         "install chromium or set CRAWLCLUSTER_CHROMIUM_PATH")
    user_data_dir = tempfile.mkdtemp(prefix=f"crawlcluster-chromium-{os.getpid()}-")
    env = {**os.environ, BROWSER_OWNER_ENV: str(os.getpid())}
    with open(Path(user_data_dir) / "chromium.log", "wb") as log:
        proc = subprocess.Popen(
            [chromium_path, *CHROMIUM_FLAGS, f"--user-data-dir={user_data_dir}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
            start_new_session=True, preexec_fn=_die_with_parent,
        )
    return proc, user_data_dir


async def devtools_endpoint(proc: subprocess.Popen, user_data_dir: str, chromium_path: str,
                            timeout_seconds: float) -> str:
    """The browser's DevTools websocket URL, once Chromium wrote it to its profile
    directory; a readable error (with Chromium's own last words) if it exits or is late."""
    port_file = Path(user_data_dir) / "DevToolsActivePort"
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log = (Path(user_data_dir) / "chromium.log").read_text(errors="replace")[-1500:]
            raise FetchError("", "browser", f"Chromium ({chromium_path}) exited with {proc.returncode} "
                                            f"while starting:\n{log}")
        lines = port_file.read_text().split("\n") if port_file.exists() else []
        if len(lines) >= 2 and lines[0].isdigit() and lines[1]:
            return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
        await asyncio.sleep(0.05)
    raise FetchError("", "browser", f"Chromium ({chromium_path}) did not start within {timeout_seconds:.0f}s "
                     "(render_launch_timeout_seconds)")
