"""Local servers that answer badly on purpose, each logging every request (or TLS connection)
it received, for tests of final errors and of the caps on what a server asks.

:class:`RawServer` answers over a plain socket with whatever bytes its handler writes (an
illegal status line, headers over h11's limit, a reset mid-body); :class:`TlsServer` speaks
TLS with a self-signed certificate made by the test (``openssl`` CLI), optionally only old
protocol versions. Both bind 127.0.0.1 on a free port and stop by closing their socket.
"""

from __future__ import annotations

import socket
import ssl
import struct
import subprocess
import threading
import warnings
from pathlib import Path
from typing import Callable

Handler = Callable[[str, socket.socket], None]
# the most of a request a server reads (a 1 MB URL fits)
MOST_REQUEST_BYTES = 4 * 1024 * 1024


def _read_request(conn: socket.socket) -> str:
    """The path of the request on ``conn`` ("" when nothing came)."""
    data = b""
    while b"\r\n\r\n" not in data and len(data) < MOST_REQUEST_BYTES:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    line = data.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ")
    return parts[1] if len(parts) >= 2 else ""


def reset(conn: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0): the peer reads "Connection reset by peer"."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def send(data: bytes) -> Handler:
    return lambda _path, conn: conn.sendall(data)


def not_found(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


class _Server:
    """A TCP server on 127.0.0.1: every accepted connection is counted and handed to
    ``_one`` on a thread of its own."""

    scheme = "http"

    def __init__(self) -> None:
        self.connections = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        conn.close()

    def stop(self) -> None:
        self.sock.close()


class RawServer(_Server):
    """A plain-socket server: ``handler(path, conn)`` writes the answer; robots.txt answers 404
    unless ``robots`` is given. ``log`` holds every request's path, in order."""

    def __init__(self, handler: Handler, robots: Handler | None = None) -> None:
        self.handler = handler
        self.robots = robots
        self.log: list[str] = []
        self._lock = threading.Lock()
        super().__init__()

    def _one(self, conn: socket.socket) -> None:
        try:
            path = _read_request(conn)
            with self._lock:
                self.log.append(path)
            if path == "/robots.txt":
                (self.robots or (lambda _p, c: not_found(c)))(path, conn)
            else:
                self.handler(path, conn)
        except OSError:
            pass
        finally:
            conn.close()

    def requests(self, path: str | None = None) -> int:
        with self._lock:
            return len([p for p in self.log if path is None or p == path])


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """(certificate, key) of a self-signed certificate for 127.0.0.1, made with openssl."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


class TlsServer(_Server):
    """A TLS server with a self-signed certificate; ``old_tls`` offers nothing above TLS 1.1
    (a client of today refuses the handshake). ``connections`` counts the TCP connections
    accepted, handshake or not; a completed handshake gets a small page."""

    scheme = "https"

    def __init__(self, directory: Path, old_tls: bool = False) -> None:
        cert, key = self_signed_certificate(directory)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        if old_tls:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                self.context.maximum_version = ssl.TLSVersion.TLSv1_1
        super().__init__()

    def _one(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(10)
            with self.context.wrap_socket(conn, server_side=True) as tls:
                _read_request(tls)
                tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()


class Listener:
    """A TCP listener on ``address`` that records every connection it accepts, answers it with
    ``answer`` (if any) and closes it: where a guard must let no connection through."""

    def __init__(self, address: str, answer: bytes = b"") -> None:
        self.sock = socket.create_server((address, 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.answer = answer
        self.accepted: list[tuple[str, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = self.sock.accept()
            except OSError:
                continue
            self.accepted.append(peer)
            try:
                if self.answer:
                    conn.sendall(self.answer)
            except OSError:
                pass
            conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()
