"""A receiver of our own on loopback, for webhooks and pings: a server's event loop in
a thread, and what it received."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any


class LoopThread:
    """A server's event loop in a daemon thread: ``start()`` runs ``_open()`` in it,
    ``stop()`` runs ``_close()`` and ends the thread. Subclasses define both."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()
        self.call(self._open())

    def stop(self) -> None:
        self.call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    def call(self, coroutine: Any) -> Any:
        """Run ``coroutine`` in the server's loop and wait for its result."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(timeout=30)

    async def _open(self) -> None:
        raise NotImplementedError

    async def _close(self) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class Received:
    method: str
    target: str  # the path and query, as sent
    headers: dict[str, str]  # names in lower case
    body: bytes

    def json(self) -> Any:
        import json

        return json.loads(self.body)


class Receiver(LoopThread):
    """A webhook (or ping) receiver on loopback: an HTTP/1.1 server that records every
    request and answers as told — ``ok`` (200), a status code, ``hang`` (never
    answers), ``reset`` (drops the connection) or ``redirect`` (302 elsewhere).
    ``answers`` are used one per request, then ``default``."""

    def __init__(self, default: str | int = "ok", answers: list[str | int] | None = None) -> None:
        super().__init__()
        self.default = default
        self.answers = list(answers or [])
        self.received: list[Received] = []
        self.port = 0
        self._arrived = threading.Condition()
        self._server: asyncio.Server | None = None
        self._hanging: list[asyncio.StreamWriter] = []

    def __enter__(self) -> Receiver:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_for(self, count: int, timeout: float = 30) -> list[Received]:
        """Block until ``count`` requests have arrived (or fail the test)."""
        with self._arrived:
            arrived = self._arrived.wait_for(lambda: len(self.received) >= count, timeout)
        assert arrived, f"{len(self.received)} requests arrived, {count} awaited"
        return list(self.received)

    async def _open(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        for writer in self._hanging:
            writer.transport.abort()
        if self._server is not None:
            self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    name, value = line.split(":", 1)
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        answer = self.answers.pop(0) if self.answers else self.default
        with self._arrived:
            self.received.append(Received(method, target, headers, body))
            self._arrived.notify_all()
        if answer == "hang":
            self._hanging.append(writer)
            return
        if answer == "reset":
            writer.transport.abort()
            return
        status, extra = (200, "") if answer == "ok" else (answer, "")
        if answer == "redirect":
            status, extra = 302, "Location: http://127.0.0.1:9/elsewhere\r\n"
        writer.write(
            f"HTTP/1.1 {status} X\r\n{extra}Content-Length: 2\r\n"
            "Connection: close\r\n\r\nok".encode()
        )
        await writer.drain()
        writer.close()
