"""The clients a triggerer's triggers share: one per connection, per event loop.

An Airflow triggerer runs all its triggers in one event loop. Each deferred step polls
its execution every few seconds; with a client each, a thousand deferred steps would
hold a thousand connection pools and, with an OAuth client in the connection, mint a
thousand tokens. Here the triggers that read the same connection the same way share
one :class:`~runbook.api.NexadataClient`: one pool of at most ``POOL_CONNECTIONS``
connections, one token, one Retry-After pause. The first trigger to need it opens it;
the last one to leave closes it, with its credentials.

No Airflow import: the sharing is tested without Airflow, and used by
:mod:`runbook.airflow.trigger` in the triggerer.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from runbook.api import Credentials, NexadataClient

__all__ = ["POOL_CONNECTIONS", "SharedClients", "fingerprint"]

POOL_CONNECTIONS = 16
"""Connections a shared client keeps open at most: a poll takes a few milliseconds, so
16 carry thousands of deferred steps polled every few seconds."""


def fingerprint(*fields: Any) -> str:
    """A key for what makes two triggers' clients the same: the connection as read, its
    secret included (a rotated secret gets a client of its own). A digest, so that no
    secret sits in a key a traceback or a debugger might show."""
    text = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(eq=False)
class _Shared:
    client: NexadataClient
    credentials: Credentials
    users: int = 0


class SharedClients:
    """Clients by key, per event loop (a connection pool belongs to the loop it was
    opened in), each counted by the triggers using it."""

    def __init__(self) -> None:
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _Shared]]
        self._loops = weakref.WeakKeyDictionary()

    def open_clients(self) -> int:
        """How many clients are open in the running loop."""
        return len(self._loops.get(asyncio.get_running_loop(), {}))

    @asynccontextmanager
    async def use(
        self, key: str, open_client: Callable[[], tuple[NexadataClient, Credentials]]
    ) -> AsyncIterator[NexadataClient]:
        """The client for ``key``, made by ``open_client()`` if none is open; closed,
        with its credentials, when the last of its users leaves."""
        clients = self._loops.setdefault(asyncio.get_running_loop(), {})
        shared = clients.get(key)
        opened = shared is None
        if shared is None:
            client, credentials = open_client()
            shared = clients[key] = _Shared(client, credentials)
        shared.users += 1
        try:
            if opened:
                await shared.client.__aenter__()
            yield shared.client
        finally:
            shared.users -= 1
            if shared.users == 0:
                if clients.get(key) is shared:
                    del clients[key]
                try:
                    await shared.client.__aexit__(None, None, None)
                finally:
                    await shared.credentials.aclose()
