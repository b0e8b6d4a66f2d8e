"""``python -m bench screenshots``: the README's pictures of the crawl console, from a real run.

Serves the bundled demo site, crawls it with ``crawlcluster crawl`` (the link spider, and
:class:`bench.screenshot_spiders.DemoSpider`, whose ``parse_prices`` raises) into one SQLite
file, submits and pauses a third project, serves the console on that file, and takes PNG
screenshots with Debian's Chromium (started as the render tier starts it, driven by
pyppeteer over its pipe): the dashboard, and the step debugger running the raising callback,
1280 px wide, written to docs/. ``--laptop DIR`` also writes each page at 1024 and 1440 px
there, to review the layout.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.screenshot_spiders import START_ENV

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
CHROMIUM = "/usr/bin/chromium"
CLI = [sys.executable, "-m", "crawlcluster.cli"]
HEIGHT = 760


def _run(argv: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    if done.returncode not in (0, 1):  # 1: a crawl whose pages all failed is still a picture
        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stderr[-3000:]}")


def _crawl(site_url: str, db: Path, env: dict[str, str]) -> None:
    """The crawls the pictures show, each a real embedded crawl of the demo site."""
    _run([*CLI, "crawl", site_url + "/", "--db", str(db), "--project", "demo-site", "-q"], env)
    _run([*CLI, "crawl", "bench.screenshot_spiders:DemoSpider", "--db", str(db), "--project", "demo-spider",
          "--max-pages", "40", "-q"], {**env, START_ENV: site_url + "/"})
    import crawlcluster

    backlog = crawlcluster.submit([f"{site_url}/page/{n}" for n in range(12)], project="backlog",
                                  database_url=f"sqlite:///{db}", settings={"rate": 2, "burst": 4})
    backlog.pause()


class _Console:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        with socket.socket() as probe:  # a free loopback port
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.log = open(log, "wb")
        self.proc = subprocess.Popen([*CLI, "web", "--port", self.url.rsplit(":", 1)[1]], env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        for _ in range(300):
            try:
                if httpx.get(self.url + "/static/console.css", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise SystemExit("the console did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.log.close()


async def _shoot(console_url: str, site_url: str, laptop: Path | None) -> list[Path]:
    from workers.browser.chromium import browser_user, start_chromium
    from workers.browser.devtools_pipe import connect_over_pipe

    chromium = start_chromium(CHROMIUM, proxy_url="direct://", user=browser_user(""), sandbox=True)
    written = []
    try:
        browser = await connect_over_pipe(chromium.to_browser, chromium.from_browser)
        page = await browser.newPage()

        async def debugger() -> None:
            await page.goto(console_url + "/debug", waitUntil="load")
            for name, value in (("spider", "bench.screenshot_spiders:DemoSpider"),
                                ("url", site_url + "/page/3"), ("callback", "parse_prices")):
                await page.evaluate(f"document.querySelector('#step input[name={name}]').value = {value!r}",
                                    force_expr=True)
            await asyncio.gather(page.waitForNavigation(waitUntil="load"), page.click("#run-step"))

        async def dashboard() -> None:
            await page.goto(console_url + "/", waitUntil="load")

        shots: list[tuple[str, Any]] = [("dashboard", dashboard), ("debugger", debugger)]
        widths = [(1280, DOCS)] + ([(1024, laptop), (1440, laptop)] if laptop else [])
        for width, where in widths:
            await page.setViewport({"width": width, "height": HEIGHT})
            for name, show in shots:
                await show()
                path = where / (f"console-{name}.png" if where == DOCS else f"console-{name}-{width}.png")
                full = where != DOCS  # the review sees the whole page; the README a window of it
                await page.screenshot({"path": str(path), "fullPage": full})
                written.append(path)
        await browser.close()
    finally:
        if chromium.proc.poll() is None:
            os.killpg(chromium.proc.pid, 9)
        chromium.proc.wait(timeout=10)
        shutil.rmtree(chromium.user_data_dir, ignore_errors=True)
    return written


def main(laptop: str | None = None) -> None:
    from crawlcluster.devtools.demo_site import DemoSite

    tmp = Path(tempfile.mkdtemp(prefix="crawlcluster-screens-"))
    db = tmp / "crawl.db"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "CRAWLCLUSTER_SPIDER_PACKAGES": "bench", "CRAWLCLUSTER_DATABASE_URL": f"sqlite:///{db}",
           "CRAWLCLUSTER_BROKER_URL": "memory://", "CRAWLCLUSTER_AUTO_PAUSE_FAILURES": "0",
           "CRAWLCLUSTER_RETRIES": "1", "CRAWLCLUSTER_RETRY_DELAYS": "0.2"}
    os.environ["CRAWLCLUSTER_SPIDER_PACKAGES"] = "bench"
    with DemoSite(pages=60, traps=True, retry_traps=True).serve() as server:
        _crawl(server.url, db, env)
        console = _Console(env, tmp / "console.log")
        try:
            laptop_dir = Path(laptop) if laptop else None
            if laptop_dir:
                laptop_dir.mkdir(parents=True, exist_ok=True)
            written = asyncio.run(_shoot(console.url, server.url, laptop_dir))
        finally:
            console.stop()
    shutil.rmtree(tmp, ignore_errors=True)
    for path in written:
        print(f"{path}  {path.stat().st_size / 1024:.0f} KiB")
