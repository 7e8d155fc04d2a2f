"""SIGINT and SIGTERM during a run, as a context manager around it.

The first signal interrupts the run (no new trigger; polls and waits end; triggers
under way get their answers, within the grace). Every signal reaches the sinks as a
:class:`~runbook.events.SignalReceived` event; after the second one has reached them,
``on_second`` is called — the command ends the process there, the journal already
holding everything the run did.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from runbook.events import SignalReceived
from runbook.executor import Executor

__all__ = ["SIGNALS", "interrupts"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def interrupts(executor: Executor, on_second: Callable[[], None]) -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM interrupt ``executor``'s run (call it
    inside the running event loop)."""
    loop = asyncio.get_running_loop()

    def on_signal(name: str) -> None:
        first = executor.halted is None
        if first:
            executor.interrupt(f"interrupted by {name}")
        executor.bus.tell(
            SignalReceived(
                name=name,
                first=first,
                triggers_under_way=executor.triggers_under_way,
                grace=executor.interrupt_grace,
                at=time.time(),
            )
        )
        if not first:
            on_second()

    for sig in SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig.name)
    try:
        yield
    finally:
        for sig in SIGNALS:
            loop.remove_signal_handler(sig)
