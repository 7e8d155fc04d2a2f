"""What every step of one run shares with the executor: the API, the clocks, the
slots, the scheduler core, the bus, and the run's few mutable facts (which triggers
are under way, which retries wait, whether the run halted)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from runbook.api import Execution
from runbook.run.bus import Bus
from runbook.run.slots import Slots
from runbook.schedule import Schedule

__all__ = ["Api", "Clock", "Halt", "Shell"]


class Api(Protocol):
    """What the executor needs of the API client."""

    async def trigger(self, workflow_id: int) -> Execution: ...

    async def get_execution(self, execution_id: int) -> Execution: ...


@dataclass(frozen=True, slots=True)
class Clock:
    """The run's sense of time: ``monotonic`` for waits and timeouts, ``wall`` (epoch
    seconds) for what is recorded, ``sleep`` to wait, ``rng`` for the polls' jitter.
    Tests pass a virtual clock."""

    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep
    rng: random.Random = field(default_factory=random.Random)


class Halt(Exception):
    """Raised inside a step task when the step must not go on: the run was interrupted,
    or a stop ended the step before it started."""


@dataclass(eq=False, slots=True)
class Shell:
    api: Api
    clock: Clock
    bus: Bus
    core: Schedule
    slots: Slots
    triggering: set[str] = field(default_factory=set)
    """Steps whose trigger is under way: an interrupt waits for their answers."""
    waiting_retry: set[str] = field(default_factory=set)
    """Steps waiting out a retry's delay: a stop ends the wait."""
    halted: str | None = None
    """Why the run was cut short (a signal, a lost token), once it was."""
