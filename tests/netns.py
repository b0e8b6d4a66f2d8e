"""A small virtual network of hosts for multi-host tests: Linux network namespaces joined by
veth links to a bridge that lives in a namespace of its own (root only; iproute2).

    with VirtualNetwork("cc123", {"master": "10.231.0.1", "w1": "10.231.0.11"}) as net:
        net.popen("master", ["redis-server", ...])      # a process on that host
        with net.entered("master"): socket.create_connection(...)   # this thread, there
        net.link_down("w1")                              # the host drops off the network

Every address is inside namespaces this module creates; nothing touches the machine's own
network. ``close()`` kills what is still running in the namespaces and deletes them all.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from typing import Any, Iterator

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


class VirtualNetwork:
    def __init__(self, prefix: str, hosts: dict[str, str], netmask_bits: int = 24) -> None:
        self.prefix = prefix
        self.hosts = dict(hosts)
        self.netmask_bits = netmask_bits
        self.bridge_ns = f"{prefix}-bridge"
        self.created: list[str] = []

    def ns(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def address(self, host: str) -> str:
        return self.hosts[host]

    def __enter__(self) -> "VirtualNetwork":
        try:
            self.create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def create(self) -> None:
        _ip("netns", "add", self.bridge_ns)
        self.created.append(self.bridge_ns)
        _ip("-n", self.bridge_ns, "link", "set", "lo", "up")
        _ip("-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.bridge_ns, "link", "set", "br0", "up")
        for host, address in self.hosts.items():
            ns = self.ns(host)
            _ip("netns", "add", ns)
            self.created.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            # eth0 in the host, its peer (named after the host) on the bridge
            port = f"to-{host}"[:15]
            _ip("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", port, "netns",
                self.bridge_ns)
            _ip("-n", self.bridge_ns, "link", "set", "dev", port, "master", "br0", "up")
            _ip("-n", ns, "addr", "add", f"{address}/{self.netmask_bits}", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")

    def popen(self, host: str, argv: list[str], **kwargs: Any) -> subprocess.Popen:
        """Run ``argv`` on ``host`` (``ip netns exec`` execs, so the PID is the program's)."""
        kwargs.setdefault("start_new_session", True)
        return subprocess.Popen(["ip", "netns", "exec", self.ns(host), *argv], **kwargs)

    def run(self, host: str, argv: list[str], timeout: float = 60,
            **kwargs: Any) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.ns(host), *argv], capture_output=True, text=True,
                              timeout=timeout, **kwargs)

    @contextlib.contextmanager
    def entered(self, host: str) -> Iterator[None]:
        """Move the calling thread into ``host``'s network for the block. Sockets opened
        inside stay in that network after the block ends."""
        here = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        there = os.open(f"/run/netns/{self.ns(host)}", os.O_RDONLY)
        try:
            _setns(there)
            try:
                yield
            finally:
                _setns(here)
        finally:
            os.close(here)
            os.close(there)

    def enter_for_good(self, host: str) -> None:
        """Move the calling thread into ``host``'s network (a pool thread's initializer)."""
        there = os.open(f"/run/netns/{self.ns(host)}", os.O_RDONLY)
        try:
            _setns(there)
        finally:
            os.close(there)

    def link_down(self, host: str) -> None:
        _ip("-n", self.ns(host), "link", "set", "dev", "eth0", "down")

    def pids(self, ns: str) -> list[int]:
        done = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=30)
        # never this process: its threads may have entered a namespace, its main thread has not
        return [int(p) for p in done.stdout.split() if p.isdigit() and int(p) != os.getpid()]

    def close(self) -> None:
        """Kill whatever still runs in the namespaces (all started by the test), delete them."""
        for ns in reversed(self.created):
            for _ in range(50):
                pids = self.pids(ns)
                if not pids:
                    break
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                time.sleep(0.1)
        for ns in reversed(self.created):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        self.created.clear()
