"""A TCP proxy on loopback, in a thread, between runbook and the sandbox: the API as
seen through a network that can fail. It can go down — open connections cut, new ones
refused — and come back on the same port, with the API's state intact behind it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from tests.support.receiver import LoopThread


class Proxy(LoopThread):
    def __init__(self, target_port: int, trip: Callable[[bytes], bool] | None = None) -> None:
        """``trip(data)`` sees each chunk a client sends; True takes the proxy down at
        once, before that chunk is forwarded."""
        super().__init__()
        self.target_port = target_port
        self.trip = trip
        self.port = 0
        self.is_down = threading.Event()
        self.accepted = 0
        """Connections accepted so far."""
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def __enter__(self) -> Proxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1"

    def up(self) -> None:
        self.call(self._open())

    def down(self) -> None:
        self.call(self._close())

    async def _open(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self.is_down.clear()

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()  # a reset, as a dead host's connections end
        self._writers.clear()
        self.is_down.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                "127.0.0.1", self.target_port
            )
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, upstream_writer}

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter, out: bool) -> None:
            try:
                while data := await source.read(65536):
                    if out and self.trip is not None and self.trip(data):
                        await self._close()
                        return
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                sink.transport.abort()

        await asyncio.gather(
            pump(reader, upstream_writer, True), pump(upstream_reader, writer, False)
        )
        self._writers -= {writer, upstream_writer}
