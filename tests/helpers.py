"""What the tests share that is not a fixture: a fake clock, the real entry point, the
plan and token of the apply tests, and raw TCP servers that misbehave on loopback."""

from __future__ import annotations

import asyncio
import os
import selectors
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).parent.parent
REAL_PIP_CACHE = Path(os.environ.get("PIP_CACHE_DIR") or Path.home() / ".cache" / "pip")
"""pip's cache, as it was before the tests made HOME a scratch dir."""


class Clock:
    """A clock that moves only when told; sleeping on it moves it (and is recorded)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class VirtualClock:
    """Time for an event loop that never waits: when every task is waiting on a timer,
    the clock jumps to the next one. Runs that take seconds on the wall take
    milliseconds, and the same run always sees the same times. For in-process code only:
    a real socket or thread would not see the jump."""

    def __init__(self, now: float = 1_000.0, epoch: float = 1_800_000_000.0) -> None:
        self.now = now
        self.epoch = epoch

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        """Epoch seconds that move with the clock."""
        return self.epoch + self.now

    def run(self, coroutine: Any) -> Any:
        """``asyncio.run`` on a loop whose time is this clock's."""
        loop = _VirtualTimeLoop(self)
        try:
            return loop.run_until_complete(coroutine)
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()


class _JumpingSelector(selectors.DefaultSelector):  # type: ignore[misc, valid-type]
    def __init__(self, clock: VirtualClock) -> None:
        super().__init__()
        self._clock = clock

    def select(self, timeout: float | None = None) -> Any:
        ready = super().select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:  # no timer at all: only real I/O can wake the loop
            return super().select(None)
        self._clock.now += timeout  # nothing to do until the next timer: go there
        return []


class _VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self, clock: VirtualClock) -> None:
        self._virtual = clock
        super().__init__(_JumpingSelector(clock))

    def time(self) -> float:
        return self._virtual.now


@dataclass
class Result:
    code: int
    out: str
    err: str


def without_coverage_hook() -> dict[str, str]:
    """This environment minus coverage's subprocess hook: for children whose coverage
    would change what they test (load, or a file-size limit its data file would hit)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_PROCESS")}


def entry_point() -> list[str]:
    """The installed console script, as a user runs it."""
    script = Path(sys.executable).parent / "runbook"
    return [str(script)] if script.exists() else [sys.executable, "-m", "runbook"]


def run_entry(*argv: str, cwd: Path | None = None, timeout: float = 60) -> Result:
    """Run the real ``runbook`` executable in a subprocess."""
    done = subprocess.run(
        [*entry_point(), *argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "100"},
    )
    return Result(done.returncode, done.stdout, done.stderr)


# -- apply against a sandbox in this process (tests/cli) --------------------------

TOKEN = "durable-token-Xy7-distinct"
PLAN = """\
version: 1
name: night
defaults: {poll_interval: 20ms, max_poll_interval: 50ms, retry_delay: 10ms}
workflows:
  extract: {workflow_id: 1}
  load: {workflow_id: 2, depends_on: extract}
  side: {workflow_id: 3}
  report: {workflow_id: 4, depends_on: [load, side]}
"""


def executions(app) -> dict[str, int]:
    """Executions per workflow id, as the sandbox counted them."""
    return dict(app.state.sandbox.stats()["executions"])


# -- raw servers on loopback (tests/wire) ---------------------------------------


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


# -- TLS ---------------------------------------------------------------------------

API_HOST = "api.nexadata.test"
"""A name for the API that nothing resolves: through a proxy runbook never looks it up,
and tests that go directly map it to loopback themselves."""


@dataclass(frozen=True)
class Certificate:
    """A private CA's bundle, and a server certificate it signed (chain and key)."""

    ca: Path
    chain: Path
    key: Path


@contextmanager
def serve_https(app: Any, certificate: Certificate) -> Iterator[str]:
    """``app`` under uvicorn on loopback over TLS with ``certificate``: its base URL."""
    from runbook.sandbox.server import serve_in_thread

    with serve_in_thread(
        app, ssl_certfile=str(certificate.chain), ssl_keyfile=str(certificate.key)
    ) as url:
        yield url


def make_certificate(directory: Path) -> Certificate:
    """A CA (trustme) and a certificate for 127.0.0.1 and API_HOST, as PEM files."""
    import trustme

    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", API_HOST)
    files = Certificate(directory / "ca.pem", directory / "chain.pem", directory / "key.pem")
    ca.cert_pem.write_to_path(str(files.ca))
    server.private_key_pem.write_to_path(str(files.key))
    for index, blob in enumerate(server.cert_chain_pems):
        blob.write_to_path(str(files.chain), append=index > 0)
    return files


# -- servers of our own, on loopback ------------------------------------------------


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
