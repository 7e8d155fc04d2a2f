"""``max_parallel`` slots, granted by priority: an attempt holds one from its trigger
to its execution's end, as ``async with slots.held(priority, name):``.

Invariants:

- ``free`` plus the slots held equals ``count``; a slot is released in one place, when
  ``held`` is left, however it is left.
- A slot is never free while a waiter waits: a release hands it straight to the waiter
  with the lowest priority key (first come, first served among equals).
- A waiter withdrawn (a stop ended its step) or refused (the slots closed: the run was
  interrupted) raises :class:`Refused` and holds nothing; once closed, every ``held``
  is refused. A waiter cancelled in the moment its slot was granted passes it on.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

__all__ = ["Refused", "Slots"]


class Refused(Exception):
    """No slot was granted: the waiter was withdrawn, or the slots are closed."""


class Slots:
    def __init__(self, count: int) -> None:
        self.count = count
        self.free = count
        self.closed = False
        self._waiters: list[tuple[Any, int, asyncio.Future[bool]]] = []
        self._waiting: dict[str, asyncio.Future[bool]] = {}
        self._arrival = itertools.count()

    @asynccontextmanager
    async def held(self, priority: Any, name: str) -> AsyncIterator[None]:
        """A slot for the block, granted by ``priority`` (lower first) to ``name``;
        :class:`Refused` if withdrawn or closed before it was granted."""
        if not await self._acquire(priority, name):
            raise Refused(name)
        try:
            yield
        finally:
            self._release()

    @property
    def waiting(self) -> int:
        """How many wait for a slot."""
        return len(self._waiting)

    def withdraw(self, name: str) -> None:
        """``name`` no longer wants a slot: its wait is refused (unless granted)."""
        future = self._waiting.get(name)
        if future is not None and not future.done():
            future.set_result(False)

    def close(self) -> None:
        """Refuse every waiter, and every ``held`` from now on."""
        self.closed = True
        for _, _, future in self._waiters:
            if not future.done():
                future.set_result(False)
        self._waiters.clear()

    async def _acquire(self, priority: Any, name: str) -> bool:
        if self.closed:
            return False
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return True
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._arrival), future))
        self._waiting[name] = future
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled() and future.result():
                self._release()  # granted as the waiter was cancelled: pass it on
            raise
        finally:
            self._waiting.pop(name, None)

    def _release(self) -> None:
        while self._waiters:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(True)  # the slot passes straight to the next waiter
                return
        self.free += 1
