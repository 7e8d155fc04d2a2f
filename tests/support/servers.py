"""Servers on loopback that misbehave on purpose: raw TCP servers, a closed port, and
HTTPS with a private CA."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


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
