"""An HTTP proxy on loopback, in a thread, that only tunnels: ``CONNECT host:port``.

It routes each tunnel by the name asked for to a port on 127.0.0.1 (a name runbook
never resolves itself), records every request head and every byte it carries, and can
refuse tunnels with a status of its own or cut one once ``trip()`` says so."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

from tests.support.receiver import LoopThread


class ConnectProxy(LoopThread):
    def __init__(
        self,
        routes: Mapping[str, int],
        *,
        refuse: int | None = None,
        trip: Callable[[], bool] | None = None,
    ) -> None:
        """``routes``: ``{"host:port": loopback port}``; ``refuse``: answer every CONNECT
        with this status; ``trip()``: checked before each chunk the server sends back
        through a tunnel; True cuts the tunnel instead of forwarding it."""
        super().__init__()
        self.routes = dict(routes)
        self.refuse = refuse
        self.trip = trip
        self.heads: list[bytes] = []  # each request head as it came, headers and all
        self.carried = bytearray()  # every byte tunnelled, both ways
        self.cut = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._serving: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    def __enter__(self) -> ConnectProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def url(self, credentials: str = "") -> str:
        return f"http://{credentials + '@' if credentials else ''}127.0.0.1:{self.port}"

    @property
    def request_lines(self) -> list[str]:
        return [head.split(b"\r\n", 1)[0].decode() for head in self.heads]

    async def _open(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        """Stop listening, cut every tunnel still open and wait for its task: nothing
        is left pending (or a socket unclosed) when the loop stops."""
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        await asyncio.gather(*self._serving, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._serving.add(task)
        self._writers.add(writer)
        try:
            await self._tunnel(reader, writer)
        finally:
            self._serving.discard(task)
            self._writers.discard(writer)

    async def _tunnel(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        self.heads.append(head)
        method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
        port = self.routes.get(target)
        if method != "CONNECT" or port is None or self.refuse is not None:
            status = self.refuse or (405 if method != "CONNECT" else 502)
            writer.write(f"HTTP/1.1 {status} Refused\r\nContent-Length: 0\r\n\r\n".encode())
            await writer.drain()
            writer.close()
            return
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", port)
        self._writers.add(upstream_writer)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()

        async def pump(
            source: asyncio.StreamReader, sink: asyncio.StreamWriter, back: bool
        ) -> None:
            try:
                while data := await source.read(65536):
                    if back and self.trip is not None and self.trip():
                        self.cut += 1
                        writer.transport.abort()
                        upstream_writer.transport.abort()
                        return
                    self.carried.extend(data)
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                sink.transport.abort()

        try:
            await asyncio.gather(
                pump(reader, upstream_writer, False), pump(upstream_reader, writer, True)
            )
        finally:
            self._writers.discard(upstream_writer)
