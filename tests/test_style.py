"""The style the project keeps, checked by the tools that keep it: ruff over every Python
file of the checkout, with the rules in pyproject.toml's [tool.ruff], and mypy over the
package (crawlcluster, workers, tasks) with [tool.mypy]. A missing tool is a failure (both
come with the test extra), never a skip."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECKED = ("crawlcluster", "workers", "tasks", "tests", "bench", "celeryconfig.py")


def test_ruff_finds_nothing_in_the_checkout() -> None:
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", *CHECKED], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert "No module named ruff" not in done.stderr, "ruff is missing: pip install -e '.[test]'"
    assert done.returncode == 0, \
        f"ruff found problems (fix them, or `ruff check --fix`):\n{done.stdout[-5000:]}"


def test_mypy_finds_nothing_in_the_package() -> None:
    done = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", "--cache-dir", "/dev/null"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert "No module named mypy" not in done.stderr, "mypy is missing: pip install -e '.[test]'"
    assert done.returncode == 0, f"mypy found problems:\n{done.stdout[-5000:]}{done.stderr[-2000:]}"
