"""Clocks for tests: one that moves only when told, and a virtual clock for an event
loop that never waits."""

from __future__ import annotations

import asyncio
import selectors
from typing import Any


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
