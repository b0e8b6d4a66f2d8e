"""Peak memory and CPU time of a crawler's processes, read from /proc while it runs.

A :class:`ProcessSampler` polls every ``interval_seconds`` (0.2 s by default): it finds
every process descended from the crawler's root PIDs, adds up their VmRSS and keeps the
largest sum, and remembers each process's utime+stime so the CPU spent between
:meth:`start` and :meth:`stop` can be read without stopping the crawler (long-running
workers). Processes that match ``service_match`` (Redis, the bench database's Postgres
backends) are sampled for CPU only: they are shared services, not the crawler, but their
cost belongs in the picture. Processes that exit between two polls lose at most one
interval of CPU; one-process crawlers use :func:`wait_with_rusage` for the exact figure.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class _Proc:
    ppid: int
    cpu_ticks: int
    name: str


def _read_stat(pid: int) -> _Proc | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            raw = stat.read()
    except OSError:
        return None
    # the command name may hold spaces and parentheses: split after the last ")"
    name = raw[raw.find(b"(") + 1:raw.rfind(b")")].decode(errors="replace")
    fields = raw[raw.rfind(b")") + 2:].split()
    return _Proc(ppid=int(fields[1]), cpu_ticks=int(fields[11]) + int(fields[12]), name=name)


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmd:
            return cmd.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def service_matcher(database_name: str | None, redis: bool = True) -> Callable[[int, str], bool]:
    """Match redis-server and the Postgres backends connected to ``database_name``."""

    def match(pid: int, name: str) -> bool:
        if redis and name == "redis-server":
            return True
        if database_name and name == "postgres":
            # a backend's title is "postgres: 15/main: USER DATABASE HOST(PORT) STATE"
            return f" {database_name} " in _cmdline(pid)
        return False

    return match


@dataclass
class Sample:
    peak_rss_bytes: int = 0
    peak_processes: int = 0
    cpu_seconds: float = 0.0
    service_cpu_seconds: float = 0.0
    cpu_seconds_by_root: dict[int, float] = field(default_factory=dict)  # which process tree spent it
    pids: set[int] = field(default_factory=set)


class ProcessSampler:
    """Polls the process trees under ``roots()`` until :meth:`stop`; see the module docstring."""

    def __init__(self, roots: Callable[[], list[int]], *, interval_seconds: float = 0.2,
                 service_match: Callable[[int, str], bool] | None = None) -> None:
        self.roots = roots
        self.interval_seconds = interval_seconds
        self.service_match = service_match
        self.result = Sample()
        self._baseline: dict[int, int] = {}
        self._latest: dict[int, int] = {}
        self._service_baseline: dict[int, int] = {}
        self._service_latest: dict[int, int] = {}
        self._root_of: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-process-sampler", daemon=True)
        self._started = False

    def start(self) -> "ProcessSampler":
        """Take the CPU baseline of the processes alive now, then poll in a thread."""
        crawler, services = self._scan()
        self._baseline = {pid: ticks for pid, (ticks, _rss) in crawler.items()}
        self._service_baseline = {pid: ticks for pid, ticks in services.items()}
        self._record(crawler, services)
        self._started = True
        self._thread.start()
        return self

    def stop(self) -> Sample:
        """One last poll (the crawler's processes must still be alive for an exact CPU figure)."""
        if self._started:
            self._stop.set()
            self._thread.join(5)
            self._record(*self._scan())

        def spent(latest: dict[int, int], baseline: dict[int, int]) -> float:
            return sum(ticks - baseline.get(pid, 0) for pid, ticks in latest.items()) / CLOCK_TICKS

        self.result.cpu_seconds = spent(self._latest, self._baseline)
        for pid, ticks in self._latest.items():
            root = self._root_of.get(pid, pid)
            self.result.cpu_seconds_by_root[root] = (self.result.cpu_seconds_by_root.get(root, 0.0)
                                                     + (ticks - self._baseline.get(pid, 0)) / CLOCK_TICKS)
        self.result.service_cpu_seconds = spent(self._service_latest, self._service_baseline)
        return self.result

    def _run(self) -> None:
        while not self._stop.wait(self.interval_seconds):
            self._record(*self._scan())

    def _scan(self) -> tuple[dict[int, tuple[int, int]], dict[int, int]]:
        procs: dict[int, _Proc] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                proc = _read_stat(int(entry))
                if proc is not None:
                    procs[int(entry)] = proc
        children: dict[int, list[int]] = {}
        for pid, proc in procs.items():
            children.setdefault(proc.ppid, []).append(pid)
        tree: set[int] = set()
        todo = [(pid, pid) for pid in self.roots() if pid in procs]
        while todo:
            pid, root = todo.pop()
            if pid not in tree:
                tree.add(pid)
                self._root_of[pid] = root
                todo.extend((child, root) for child in children.get(pid, ()))
        crawler = {pid: (procs[pid].cpu_ticks, _rss_bytes(pid)) for pid in tree}
        services: dict[int, int] = {}
        if self.service_match is not None:
            services = {pid: p.cpu_ticks for pid, p in procs.items()
                        if pid not in tree and self.service_match(pid, p.name)}
        return crawler, services

    def _record(self, crawler: dict[int, tuple[int, int]], services: dict[int, int]) -> None:
        for pid, (ticks, _rss) in crawler.items():
            self._latest[pid] = ticks
        self._service_latest.update(services)
        rss = sum(r for _t, r in crawler.values())
        if rss > self.result.peak_rss_bytes:
            self.result.peak_rss_bytes = rss
        self.result.peak_processes = max(self.result.peak_processes, len(crawler))
        self.result.pids.update(crawler)


@dataclass
class Exited:
    returncode: int
    cpu_seconds: float
    wall_seconds: float


def wait_with_rusage(pid: int, started: float, timeout_seconds: float) -> Exited:
    """Reap ``pid`` with wait4 (exact CPU time of it and its reaped children); kill its
    process group when it outlives ``timeout_seconds`` (returncode is then -9)."""
    deadline = started + timeout_seconds
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            return Exited(code, usage.ru_utime + usage.ru_stime, time.monotonic() - started)
        if time.monotonic() > deadline:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _done, status, usage = os.wait4(pid, 0)
            return Exited(-9, usage.ru_utime + usage.ru_stime, time.monotonic() - started)
        time.sleep(0.02)
