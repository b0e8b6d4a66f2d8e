"""A private redis-server and a private Postgres cluster for fault tests and the fault bench.

Fault tests (tests/test_broker_outage.py) and `python -m bench faults` kill and restart the
broker or the database; they must never touch the shared services other sessions use. Each
service here is started by this process in a temporary directory, and stopped (or killed) by
its PID only.

    with PrivateRedis(tmp_path) as broker:
        broker.restart_empty()          # SIGKILL, then a new server with no data
    with PrivatePostgres() as database:
        database.restart_immediate()    # pg_ctl restart -m immediate
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    """A port nothing listens on at this moment (bound to 127.0.0.1, then closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait(predicate: Any, timeout: float, what: str) -> None:
    """Poll ``predicate`` every 0.1 s until it is true, for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what} within {timeout}s")


class PrivateRedis:
    """A redis-server of this test's own, bound to 127.0.0.1 on a free port."""

    def __init__(self, directory: Path, *, persistence: bool = False) -> None:
        self.dir = Path(directory) / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.persistence = persistence
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def __enter__(self) -> PrivateRedis:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> None:
        """Start the server (with its data file when ``persistence``) and wait for PING."""
        self.starts += 1
        persist = ["--appendonly", "yes", "--appendfsync",
                   "always"] if self.persistence else ["--appendonly", "no"]
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--save", "", *persist, "--logfile", str(self.dir / f"redis-{self.starts}.log")]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)

        def pong() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        _wait(pong, 20, f"redis-server on port {self.port} did not answer")
        client.close()

    def kill(self) -> None:
        """SIGKILL the server (what a crash or an OOM kill does) and wait for it to go."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def restart_empty(self, down_seconds: float = 2.0) -> None:
        """Kill the server, and after ``down_seconds`` start a new one with no data."""
        self.kill()
        if not self.persistence:
            for data in self.dir.glob("*.rdb"):
                data.unlink()
        time.sleep(down_seconds)
        self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


class PrivatePostgres:
    """A throwaway Postgres 15 cluster (initdb, pg_ctl) on a free port, run as user postgres
    when this process is root (initdb refuses root)."""

    def __init__(self) -> None:
        # a directory of its own under /tmp: user postgres cannot enter pytest's (mode 0700)
        self.home = Path(tempfile.mkdtemp(prefix="crawlcluster-pg-"))
        self.dir = self.home / "pgdata"
        self.port = free_port()
        self.log = self.home / "postgres.log"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def __enter__(self) -> PrivatePostgres:
        self.init()
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _run(self, *argv: str, timeout: float = 60) -> None:
        command = [str(PG_BIN / argv[0]), *argv[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, timeout=timeout, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if done.returncode:
            raise subprocess.CalledProcessError(done.returncode, command, stderr=done.stderr)

    def init(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.home, user="postgres")
            self.log.touch()
            shutil.chown(self.log, user="postgres")
        self._run("initdb", "-D", str(self.dir), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--no-sync")
        with open(self.dir / "postgresql.conf", "a") as conf:
            conf.write(f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                       f"unix_socket_directories = '{self.dir}'\nfsync = off\nmax_connections = 200\n")

    def _pg_ctl(self, *args: str) -> None:
        self._run("pg_ctl", "-D", str(self.dir), "-l", str(self.log), "-w", "-t", "60", *args)

    def start(self) -> None:
        self._pg_ctl("start")

    def restart_immediate(self) -> None:
        """``pg_ctl restart -m immediate``: every connection is cut, no clean shutdown."""
        self._pg_ctl("restart", "-m", "immediate")

    def stop_for(self, seconds: float) -> None:
        """Stop the server (immediate), stay down ``seconds``, start it again."""
        self._pg_ctl("stop", "-m", "immediate")
        time.sleep(seconds)
        self.start()

    def stop(self) -> None:
        """Stop the server (by pg_ctl, which signals its postmaster's PID) and remove its files."""
        if (self.dir / "postmaster.pid").exists():
            try:
                self._pg_ctl("stop", "-m", "immediate")
            except subprocess.CalledProcessError:
                pass
        shutil.rmtree(self.home, ignore_errors=True)
