"""`crawlcluster crawl URL --web`: the embedded crawl serves the console for itself on
127.0.0.1, and the console's pause, resume and cancel act on that crawl while it runs,
as the slow local site's own log shows (no request while paused, requests again after
resume, the crawl ending on cancel with the rest of its pages never fetched).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

from crawlcluster.devtools.js_site import wait_until
from tests.scripted_site import ScriptedSite, page

CLI = [sys.executable, "-m", "crawlcluster.cli"]
PAGES = 30


def slow_site() -> ScriptedSite:
    """``/`` links to PAGES pages, each answered after 0.2 s."""
    site = ScriptedSite()
    paths = tuple(f"/p/{n}" for n in range(PAGES))

    def slow(_n: int, _h: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        time.sleep(0.2)
        return page("Slow page")

    site.route("/", lambda n, _h: page("Home", paths))
    for path in paths:
        site.route(path, slow)
    return site


def _post(base: str, project: str, verb: str) -> None:
    """Press a dashboard button as the browser does: the page's token, the page's origin."""
    html = httpx.get(base).text
    token = re.search(r'name="csrf-token" content="([^"]+)"', html).group(1)
    answer = httpx.post(f"{base}projects/{project}/action/{verb}", data={"csrf_token": token},
                        headers={"origin": base.rstrip("/"), "referer": base})
    assert answer.status_code == 303, answer.text


def test_crawl_web_serves_the_console_whose_pause_resume_and_cancel_steer_the_running_crawl(tmp_path: Path):
    site = slow_site()
    db = tmp_path / "crawl.db"
    log = tmp_path / "crawl.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([*CLI, "crawl", site.url + "/", "--db", str(db), "-q", "--project", "slow",
                                 "--per-host", "1", "--ignore-robots", "--web", "--web-port", "0"],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        found = wait_until(lambda: re.search(r"crawl console on (http://127\.0\.0\.1:\d+/)", log.read_text()),
                           timeout=30)
        assert found, log.read_text()
        base = re.search(r"crawl console on (http://127\.0\.0\.1:\d+/)", log.read_text()).group(1)
        assert wait_until(lambda: len(site.log) >= 3, timeout=20), "the crawl fetched nothing"
        dashboard = httpx.get(base)
        assert dashboard.status_code == 200 and 'data-project="slow"' in dashboard.text
        _post(base, "slow", "pause")
        status = lambda: httpx.get(base + "api/dashboard").json()["projects"][0]["status"]  # noqa: E731
        assert wait_until(lambda: status() == "paused", timeout=10)
        time.sleep(1.0)  # the page in flight when the pause came ends
        served = len(site.log)
        assert served < 1 + PAGES, "the crawl ended before the pause: nothing left to stop"
        time.sleep(2.0)
        assert len(site.log) == served, "pages were fetched while the crawl was paused"
        assert proc.poll() is None, "a paused crawl must wait, not end"
        _post(base, "slow", "resume")
        assert wait_until(lambda: len(site.log) > served, timeout=20), "resume did not restart the crawl"
        _post(base, "slow", "cancel")
        assert proc.wait(timeout=30) == 0, log.read_text()
        fetched = len(site.log)
        print(f"paused after {served} requests, cancelled after {fetched} of {1 + PAGES}")
        assert fetched < 1 + PAGES, "cancel did not end the crawl early"
        assert "cancelled" in log.read_text()
        refused = subprocess.run([*CLI, "crawl", site.url + "/", "--web-port", "1"], capture_output=True,
                                 text=True, timeout=30)
        assert refused.returncode == 2 and "--web-port is for --web" in refused.stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        site.stop()
