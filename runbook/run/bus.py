"""The run's sinks in their order, and the one way events reach them.

The journal comes first by construction — every event is durable before a renderer,
a webhook or the metrics see it, and an event the journal must commit first (a
trigger, an execution id) is committed before anyone else hears of it. The others
follow in the order they were added.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

from runbook.events import Event, Sink

__all__ = ["Bus"]


class Bus:
    def __init__(self, journal: Sink | None = None, sinks: Sequence[Sink] = ()) -> None:
        self._sinks: list[Sink] = [] if journal is None else [journal]
        self._sinks.extend(sinks)

    def add(self, *sinks: Sink) -> None:
        """``sinks`` hear every event after those already here."""
        self._sinks.extend(sinks)

    async def emit(self, event: Event) -> None:
        """Hand ``event`` to every sink in order, awaiting each one that asks for it."""
        for sink in self._sinks:
            result = sink(event)
            if inspect.isawaitable(result):
                await result

    def tell(self, event: Event) -> None:
        """Hand ``event`` to every sink without waiting (from a signal handler, or a
        sink telling the others): no sink waits on the events told this way."""
        for sink in self._sinks:
            sink(event)
