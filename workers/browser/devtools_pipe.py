"""pyppeteer over Chromium's DevTools pipe (``--remote-debugging-pipe``) instead of a port.

A DevTools port on 127.0.0.1 answers every local process: whoever reaches it drives the
browser (reads its pages and cookies, opens any URL). With the pipe, commands go to
Chromium's fd 3 and answers come from its fd 4, each message a JSON text ended by a NUL
byte, and only the worker holds the other ends. pyppeteer 2.0 only speaks websockets, so
:class:`PipeConnection` is its ``Connection`` with the transport replaced: the message
bookkeeping (ids, callbacks, sessions, events) stays pyppeteer's own.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from pyee import EventEmitter
from pyppeteer.browser import Browser
from pyppeteer.connection import Connection

logger = logging.getLogger(__name__)

# one DevTools message may be a full-page screenshot or a page's whole HTML
MAX_MESSAGE_BYTES = 512 * 1024 * 1024


class _PipeEnds:
    """Both ends of the pipe pair as asyncio streams; ``close`` is what pyppeteer calls on dispose."""

    def __init__(self, reader: asyncio.StreamReader, writer_transport: asyncio.WriteTransport,
                 read_transport: asyncio.ReadTransport) -> None:
        self.reader = reader
        self.writer = writer_transport
        self._read_transport = read_transport

    async def send(self, message: str) -> None:
        if self.writer.is_closing():
            raise ConnectionResetError("the DevTools pipe is closed")
        self.writer.write(message.encode("utf-8") + b"\0")

    async def recv(self) -> str:
        data = await self.reader.readuntil(b"\0")
        return data[:-1].decode("utf-8")

    async def close(self) -> None:
        self.writer.close()
        self._read_transport.close()


class PipeConnection(Connection):
    """pyppeteer's Connection over the two pipe descriptors (we write ``to_browser``, read
    ``from_browser``); both are owned, and closed, by the connection from here on."""

    def __init__(self, to_browser: int, from_browser: int, loop: asyncio.AbstractEventLoop) -> None:
        # Connection.__init__ would open a websocket: set up the same state without one
        EventEmitter.__init__(self)
        self._url = f"pipe:{to_browser},{from_browser}"
        self._lastId = 0
        self._callbacks: dict[int, asyncio.Future] = {}
        self._delay = 0.0
        self._loop = loop
        self._sessions: dict = {}
        self._connected = False
        self._closeCallback = None
        self._ends: _PipeEnds | None = None
        self._opened = asyncio.Event()
        self._fds = (to_browser, from_browser)
        self._recv_fut = loop.create_task(self._recv_loop())

    async def _open(self) -> _PipeEnds:
        to_browser, from_browser = self._fds
        reader = asyncio.StreamReader(limit=MAX_MESSAGE_BYTES)
        read_transport, _ = await self._loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(from_browser, "rb", buffering=0))
        write_transport, _ = await self._loop.connect_write_pipe(
            asyncio.Protocol, os.fdopen(to_browser, "wb", buffering=0))
        return _PipeEnds(reader, write_transport, read_transport)

    async def _recv_loop(self) -> None:
        try:
            self._ends = self.connection = await self._open()
        finally:
            self._opened.set()
        self._connected = True
        while self._connected:
            try:
                message = await self._ends.recv()
            except (asyncio.IncompleteReadError, ConnectionError, OSError):
                logger.info("DevTools pipe closed")
                break
            except asyncio.LimitOverrunError:
                logger.error("a DevTools message over %d bytes; closing the connection", MAX_MESSAGE_BYTES)
                break
            await self._on_message(message)
        if self._connected:
            self._loop.create_task(self.dispose())

    async def _async_send(self, msg: str, callback_id: int) -> None:
        await self._opened.wait()
        try:
            assert self._ends is not None
            await self._ends.send(msg)
        except (ConnectionError, OSError, AssertionError):
            logger.error("DevTools pipe closed while sending")
            callback = self._callbacks.get(callback_id)
            if callback is not None and not callback.done():
                callback.set_result(None)
            await self.dispose()


async def connect_over_pipe(to_browser: int, from_browser: int) -> Any:
    """A pyppeteer ``Browser`` driving the Chromium at the other end of the pipes."""
    connection = PipeConnection(to_browser, from_browser, asyncio.get_running_loop())
    contexts = (await connection.send("Target.getBrowserContexts")).get("browserContextIds", [])
    return await Browser.create(connection, contexts, False, None, None,
                                lambda: connection.send("Browser.close"))
