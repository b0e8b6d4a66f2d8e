"""Benchmark figures as text: median and spread, a Markdown table, the machine, RESULTS.md sections.

Each benchmark owns one section of bench/RESULTS.md, between ``<!-- NAME:start -->`` and
``<!-- NAME:end -->``, and rewrites only that section, so the site's speed and the crawl
table can be measured at different times without losing each other.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
import statistics
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Iterable

RESULTS_PATH = Path(__file__).resolve().parent / "RESULTS.md"
REPO_ROOT = Path(__file__).resolve().parent.parent


def median_spread(values: list[float], digits: int = 1) -> str:
    """"12.3 (11.9–13.0)": the median, then min–max when there is more than one run."""
    if not values:
        return "-"
    median = statistics.median(values)
    if len(values) == 1:
        return f"{median:,.{digits}f}"
    return f"{median:,.{digits}f} ({min(values):,.{digits}f}–{max(values):,.{digits}f})"


def markdown_table(columns: list[str], rows: Iterable[list[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _command_output(args: list[str]) -> str:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_description(redis_version: str = "", postgres_version: str = "") -> str:
    """nproc, memory, kernel, Python, the crawlers' versions and the commit measured."""
    with open("/proc/meminfo") as meminfo:
        mem_kib = int(meminfo.readline().split()[1])
    cpu_model = ""
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    commit = _command_output(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"])
    dirty = _command_output(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"])
    load = os.getloadavg()
    parts = [
        f"- machine: {os.cpu_count()} CPUs ({cpu_model}), {mem_kib / 1024 ** 2:.1f} GiB memory, "
        f"Linux {platform.release()}; load average at the end {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}",
        f"- Python {platform.python_version()}; crawlcluster {_version('crawlcluster')} "
        f"at commit {commit or '?'}"
        + (" with uncommitted changes" if dirty else "")
        + f"; celery {_version('celery')}, kombu {_version('kombu')}, httpx {_version('httpx')}, "
          f"selectolax {_version('selectolax')}, SQLAlchemy {_version('SQLAlchemy')}",
        f"- Scrapy {_version('Scrapy')}, scrapy-redis {_version('scrapy-redis')}, "
        f"Twisted {_version('Twisted')}, "
        f"lxml {_version('lxml')}",
    ]
    if redis_version or postgres_version:
        parts.append(f"- Redis {redis_version or '?'}, PostgreSQL {postgres_version or '?'} "
                     "(both on 127.0.0.1)")
    return "\n".join(parts)


def now_utc() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def command_line() -> str:
    return "python -m bench " + " ".join(sys.argv[1:])


def write_section(name: str, text: str, path: Path = RESULTS_PATH) -> None:
    """Replace section ``name`` of RESULTS.md (appending it when missing)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{text.rstrip()}\n{end}"
    current = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.DOTALL)
    if pattern.search(current):
        updated = pattern.sub(lambda _m: block, current)
    else:
        updated = current.rstrip() + "\n\n" + block + "\n"
    path.write_text(updated, encoding="utf-8")
