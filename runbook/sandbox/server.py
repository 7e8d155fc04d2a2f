"""Serving the simulator under uvicorn: in a background thread (tests, ``apply
--sandbox``) or in the foreground (``runbook sandbox``)."""

from __future__ import annotations

import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

__all__ = ["bind", "serve_forever", "serve_in_thread"]


def bind(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening socket; port 0 takes a free one.

    It listens before uvicorn starts, so connections made at once wait in the backlog:
    the URL works as soon as this returns, with no start-up race to wait out.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says
    # TCP, and without it every keep-alive answer stalls 40 ms on Nagle + delayed ACK
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def base_url(sock: socket.socket, scheme: str = "http") -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}/api/v1"


def _config(app: Any, **options: Any) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_keep_alive=30,
        **options,
    )


@contextmanager
def serve_in_thread(
    app: Any, host: str = "127.0.0.1", port: int = 0, **options: Any
) -> Iterator[str]:
    """Serve ``app`` on loopback in a background thread; yield its API base URL.

    ``options`` go to uvicorn's ``Config``: with ``ssl_certfile`` the URL is https.
    """
    sock = bind(host, port)
    server = uvicorn.Server(_config(app, **options))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="runbook-sandbox", daemon=True
    )
    thread.start()
    try:
        yield base_url(sock, "https" if options.get("ssl_certfile") else "http")
    finally:
        server.should_exit = True
        thread.join()
        sock.close()


def serve_forever(app: Any, sock: socket.socket) -> None:
    """Serve until SIGINT or SIGTERM, then shut down cleanly and return.

    uvicorn handles both signals while it serves, and raises them again once it has
    shut down; quiet handlers installed around it turn that into a plain return.
    """
    quiet = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        uvicorn.Server(_config(app)).run(sockets=[sock])
    finally:
        sock.close()
        for sig, handler in quiet.items():
            signal.signal(sig, handler)
