"""Real servers on loopback: the sandbox under uvicorn, and raw TCP misbehavers."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from runbook.sandbox.app import create_app
from runbook.sandbox.scenario import Scenario
from runbook.sandbox.server import serve_in_thread
from tests.conftest import Clock


@pytest.fixture
def clock() -> Clock:
    return Clock(now=100.0)


@pytest.fixture
def sandbox_server(clock: Clock):
    """``start(scenario) -> (base_url, app)``; every server stops at the end of the test."""
    stack = []

    def start(scenario: Scenario | None = None, token: str = "sandbox"):
        app = create_app(scenario, token=token, clock=clock)
        context = serve_in_thread(app)
        url = context.__enter__()
        stack.append(context)
        return url, app

    yield start
    for context in reversed(stack):
        context.__exit__(None, None, None)


@contextmanager
def raw_server(mode: str, answer: bytes = b"") -> Iterator[tuple[str, list[bytes]]]:
    """A TCP server on loopback that reads each request and then misbehaves.

    ``drop``: closes the connection without answering. ``silent``: never answers.
    ``answer``: sends ``answer`` as it is, then closes. ``drip``: sends ``answer`` a
    byte every 0.1 s.
    Yields the base URL and the list of requests it read.
    """
    received: list[bytes] = []
    ready = threading.Event()
    loop = asyncio.new_event_loop()
    state: dict = {}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            received.append(await reader.readuntil(b"\r\n\r\n"))
            if mode == "silent":
                await reader.read()  # until the client gives up and closes
            elif mode == "answer":
                writer.write(answer)
                await writer.drain()
            elif mode == "drip":
                for byte in answer:
                    if state["stop"].is_set():
                        break
                    writer.write(bytes([byte]))
                    await writer.drain()
                    await asyncio.sleep(0.1)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        state["port"] = server.sockets[0].getsockname()[1]
        state["stop"] = asyncio.Event()
        ready.set()
        async with server:
            await state["stop"].wait()
            await asyncio.sleep(0.15)  # a dripping handler sees the stop and closes

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield f"http://127.0.0.1:{state['port']}/api/v1", received
    finally:
        loop.call_soon_threadsafe(state["stop"].set)
        thread.join(10)
        loop.close()


def closed_port() -> int:
    """A loopback port with nothing listening (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
