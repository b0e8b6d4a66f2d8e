"""A demo site served from a child process, with its hit counts readable from the parent."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any


class SiteProcess:
    def __init__(self, pages: int, traps: bool = True) -> None:
        args = [sys.executable, "-m", "bench.serve_site", "--pages", str(pages)]
        if not traps:
            args.append("--no-traps")
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http://"):
            raise RuntimeError(f"the benchmark site did not start: {self.url!r}")

    def _ask(self, command: str) -> dict[str, Any]:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def hits(self) -> dict[str, Any]:
        return self._ask("hits")

    def reset(self) -> None:
        self._ask("reset")

    def stop(self) -> None:
        self.proc.stdin.close()
        self.proc.terminate()
        self.proc.wait(timeout=10)
