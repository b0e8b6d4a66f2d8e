"""The style the project keeps, checked by the tools that keep it: ruff over every Python
file of the checkout, with the rules in pyproject.toml's [tool.ruff]. A missing ruff is a
failure (it comes with the test extra), never a skip."""

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
    assert done.returncode == 0, f"ruff found problems (fix them, or `ruff check --fix`):\n{done.stdout[-5000:]}"
