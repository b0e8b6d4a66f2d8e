"""The console served beside an embedded crawl (``crawlcluster crawl URL --web``): uvicorn in a
thread of the crawl's own process, on 127.0.0.1 only, reading and steering the crawl's SQLite
file. Pause, resume and cancel write the project's row as the CLI's verbs do, and the crawl's
loop obeys it: paused, nothing is dispatched and the crawl waits; cancelled, it ends.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any, Callable

from crawlcluster.errors import ConfigurationError

logger = logging.getLogger(__name__)

# how long the console may take to start answering before the crawl goes on without waiting
START_SECONDS = 10.0
# how long the server may take to close its connections when the crawl ends
STOP_SECONDS = 5.0
HOST = "127.0.0.1"


class EmbeddedConsole:
    """The console over ``database_url`` on 127.0.0.1:``port`` (0: a free port), in a daemon
    thread; :meth:`start` returns its address, :meth:`stop` ends it."""

    def __init__(self, database_url: str, port: int) -> None:
        self.database_url = database_url
        self.port = port
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> str:
        import uvicorn

        from crawlcluster.web.app import create_app

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, self.port))
        except OSError as exc:
            sock.close()
            raise ConfigurationError(f"cannot serve the console on {HOST}:{self.port} ({exc.strerror}); "
                                     "choose another with --web-port") from None
        sock.listen(64)
        self.port = sock.getsockname()[1]
        # the embedded crawl's broker is its own in-memory one: no worker outside this process
        app = create_app(self.database_url, broker_url="memory://")
        config = uvicorn.Config(app, log_level="warning", access_log=False, ws="none", lifespan="off")
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                                        name="crawl-console", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_SECONDS
        while not server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not server.started:
            logger.warning("the console on %s:%d has not started after %gs", HOST, self.port, START_SECONDS)
        return f"http://{HOST}:{self.port}/"

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=STOP_SECONDS)
        self._server = None
        self._thread = None


def start_console(port: int, announce: Callable[[str], Any]) -> Callable[[str], EmbeddedConsole]:
    """What ``run_embedded(console=...)`` calls with the crawl's database URL: the console
    started on ``port``, its address given to ``announce``."""
    def start(database_url: str) -> EmbeddedConsole:
        console = EmbeddedConsole(database_url, port)
        announce(console.start())
        return console
    return start
