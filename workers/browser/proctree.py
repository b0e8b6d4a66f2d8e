"""Process trees read from /proc: descendants of a PID, their memory, and killing them all.

A browser is a tree of processes (browser, zygotes, renderers, GPU and network
utilities). Its memory is the tree's PSS (proportional set size, from
``/proc/PID/smaps_rollup``): summed RSS counts every shared page once per process and
overstates a browser several times over, so limits are set on PSS and RSS is reported
beside it only for comparison.
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass
from typing import Iterable

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TreeMemory:
    """Memory of a process tree: ``pss_bytes`` (the honest sum) and ``rss_bytes`` (summed RSS)."""

    processes: int
    pss_bytes: int
    rss_bytes: int

    def __str__(self) -> str:
        mib = 1024 * 1024
        return (f"{self.processes} processes, PSS {self.pss_bytes / mib:.0f} MiB, "
                f"summed RSS {self.rss_bytes / mib:.0f} MiB")


def _parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            data = stat.read()
    except OSError:
        return None
    # the command name may hold spaces and parentheses: fields restart after the last ")"
    fields = data[data.rindex(b")") + 2:].split()
    if fields[0] == b"Z":
        return None  # a zombie holds no memory and takes no signal
    return int(fields[1])


def all_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def descendants(pid: int) -> list[int]:
    """``pid`` (if alive) and every live process below it, parents first."""
    children: dict[int, list[int]] = {}
    alive = set()
    for candidate in all_pids():
        parent = _parent_of(candidate)
        if parent is not None:
            alive.add(candidate)
            children.setdefault(parent, []).append(candidate)
    if pid not in alive:
        return []
    tree, frontier = [pid], [pid]
    while frontier:
        next_frontier: list[int] = []
        for parent in frontier:
            next_frontier.extend(children.get(parent, ()))
        tree.extend(next_frontier)
        frontier = next_frontier
    return tree


def _rollup(pid: int) -> tuple[int, int]:
    pss = rss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1]) * 1024
                elif line.startswith("Rss:"):
                    rss = int(line.split()[1]) * 1024
    except OSError:
        pass  # the process exited while we read the tree
    return pss, rss


def tree_memory(pids: Iterable[int]) -> TreeMemory:
    """PSS and summed RSS of ``pids`` (usually :func:`descendants` of a browser)."""
    count = pss = rss = 0
    for pid in pids:
        p, r = _rollup(pid)
        if r:
            count += 1
            pss += p
            rss += r
    return TreeMemory(count, pss, rss)


def kill_tree(pid: int, pgid: int | None = None) -> list[int]:
    """SIGKILL ``pid``, everything below it and (if given) its process group; return the
    PIDs signalled. Children are collected first, so none escapes by being re-parented."""
    victims = descendants(pid)
    if pgid is not None:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for victim in reversed(victims):
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return victims


def environ_has(pid: int, marker: bytes) -> bool:
    """Whether process ``pid`` has the ``NAME=value`` pair ``marker`` in its environment."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as env:
            return marker in env.read().split(b"\0")
    except OSError:
        return False


def pids_with_environ(marker: bytes) -> list[int]:
    """Live processes whose environment holds ``marker`` (how a browser's helpers, which
    inherit it, are found even after they were re-parented)."""
    return [pid for pid in all_pids() if _parent_of(pid) is not None and environ_has(pid, marker)]
