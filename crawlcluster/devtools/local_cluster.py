"""A local cluster of real worker and beat processes, for integration tests and benchmarks.

    with LocalCluster(env={"CRAWLCLUSTER_DATABASE_URL": ..., "CRAWLCLUSTER_BROKER_URL": ...}) as cluster:
        cluster.worker("fetch", "fetch")
        cluster.worker("parse", "parse")
        cluster.worker("store", "store")
        cluster.beat()
        crawlcluster.submit([...]).wait()

Each process runs ``celery -A crawlcluster ...`` in its own session, logs to a file per
process, and is stopped by PID (its process group) when the cluster stops.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from crawlcluster.errors import CrawlClusterError


def _die_with_parent() -> None:
    """In the child before exec: on Linux, get SIGTERM when the process that started us dies,
    so a killed test or benchmark leaves no cluster behind."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class ProcessFailed(CrawlClusterError):
    """A cluster process exited or did not become ready; the message holds its log tail."""


class LocalCluster:
    def __init__(self, env: dict[str, str] | None = None, log_dir: str | Path | None = None, *,
                 inherit_env: bool = True) -> None:
        """``env`` is added to this process's environment, or with ``inherit_env=False`` is
        the whole environment (a clean-install test hands its venv nothing of ours)."""
        self.env = dict(os.environ) if inherit_env else {}
        self.env["PYTHONUNBUFFERED"] = "1"
        self.env.update(env or {})
        self._temp = None
        if log_dir is None:
            self._temp = tempfile.TemporaryDirectory(prefix="crawlcluster-cluster-")
            log_dir = self._temp.name
        self.log_dir = Path(log_dir)
        self.procs: dict[str, subprocess.Popen] = {}

    def __enter__(self) -> "LocalCluster":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop_all()

    def start(self, name: str, *args: str) -> subprocess.Popen:
        """Run ``celery -A crawlcluster ARGS`` as process ``name``."""
        return self.spawn(name, [sys.executable, "-m", "celery", "-A", "crawlcluster", *args])

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        """Run ``argv`` as process ``name`` in a session of its own, logging to ``name.log``."""
        with open(self.log_dir / f"{name}.log", "wb") as log:
            proc = subprocess.Popen(argv, cwd=self.log_dir, env=env or self.env, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    preexec_fn=_die_with_parent)
        self.procs[name] = proc
        return proc

    def worker(self, name: str, queues: str, *extra: str, ready_timeout: float = 60) -> subprocess.Popen:
        """Start ``celery -A crawlcluster worker -Q QUEUES`` and wait until it is ready."""
        proc = self.start(name, "worker", "-Q", queues, "-n", f"{name}@%h", "-l", "info",
                          "--without-mingle", "--without-gossip", *extra)
        self.wait_for_log(name, "ready.", timeout=ready_timeout)
        return proc

    def beat(self, name: str = "beat") -> subprocess.Popen:
        return self.start(name, "beat", "-l", "info", "--schedule", str(self.log_dir / f"{name}-schedule"))

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")

    def wait_for_log(self, name: str, needle: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log(name):
                return
            if self.procs[name].poll() is not None:
                raise ProcessFailed(
                    f"{name} exited with {self.procs[name].returncode}:\n{self.log(name)[-3000:]}")
            time.sleep(0.2)
        raise ProcessFailed(f"{name} did not log {needle!r} within {timeout}s:\n{self.log(name)[-3000:]}")

    def pids(self, name: str) -> list[int]:
        """The PIDs of ``name`` and its pool children (its process group)."""
        pgid = self.procs[name].pid
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.getpgid(int(entry)) == pgid:
                        found.append(int(entry))
                except ProcessLookupError:
                    continue
        return found

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group of ``name`` and wait for it to exit."""
        proc = self.procs[name]
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)

    def signal(self, name: str, sig: int) -> None:
        """Send ``sig`` to the whole process group of ``name`` without waiting (SIGSTOP, SIGCONT)."""
        try:
            os.killpg(self.procs[name].pid, sig)
        except ProcessLookupError:
            pass

    def stop_all(self, timeout: float = 20) -> None:
        """SIGTERM every process group (warm shutdown), SIGKILL what outlives ``timeout``."""
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for proc in self.procs.values():
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=10)
        if self._temp is not None:
            self._temp.cleanup()
            self._temp = None
