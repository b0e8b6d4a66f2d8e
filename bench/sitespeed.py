"""How fast the benchmark site serves: wrk against bench/fastsite.py, keep-alive, random pages.

    python -m bench sitespeed [--pages 5000] [--seconds 10] [--connections 64] [--write-results]

Needs Debian's wrk (`apt-get install wrk`). wrk runs one thread on the same 2 cores as
the site, so the figure is a floor: a crawler fetching at a tenth of it is far from
being limited by the site.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from rich.console import Console

from bench import report
from bench.fastsite import FastSiteProcess

# wrk's Lua hook: each request a different page, spread over the whole site
_WRK_SCRIPT = """
local n = 0
request = function()
  n = n + 1
  local i = (n * 7919) %% %(pages)d
  if i == 0 then return wrk.format("GET", "/") end
  return wrk.format("GET", "/articles/" .. i .. ".html")
end
"""


def main(pages: int = 5000, seconds: int = 10, connections: int = 64, write_results: bool = False) -> None:
    console = Console()
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    site = FastSiteProcess(pages)
    try:
        with tempfile.TemporaryDirectory(prefix="crawlcluster-sitespeed-") as tmp:
            script = Path(tmp) / "pages.lua"
            script.write_text(_WRK_SCRIPT % {"pages": pages})
            args = [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script), site.url + "/"]
            output = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60).stdout
        hits = site.hits()
    finally:
        site.stop()
    console.print(output)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    transfer = re.search(r"Transfer/sec:\s+(\S+)", output).group(1)
    mean_kb = hits["bytes_sent"] / max(1, hits["requests"]) / 1000
    summary = (f"{rate:,.0f} responses/s ({transfer}/s, {mean_kb:.1f} KB per response on average) with "
               f"{connections} keep-alive connections, "
               f"{hits['pages']:,} distinct pages of {pages:,} requested")
    console.print(summary)
    if write_results:
        body = "\n".join([
            "## The benchmark site's speed",
            "",
            f"Measured {report.now_utc()} with `{report.command_line()}` "
            f"(`wrk -t1 -c{connections} -d{seconds}s`, each request a different page).",
            "",
            report.machine_description(),
            "",
            f"**{summary}.** The site is one asyncio process serving pre-rendered bytes; wrk shares the "
            "same 2 cores, so this is a floor.",
        ])
        report.write_section("sitespeed", body)
