"""The live view on a terminal: every running and failed step, the rest as counts.

Redrawn a few times a second by rich; it stays one screen for a 200-step plan by
listing only the steps worth watching (running, failed, just finished) and summing up
the others.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from runbook._compat import assert_never
from runbook.durations import format_duration
from runbook.events import (
    AttemptFinished,
    AttemptTriggered,
    AttemptTriggering,
    Event,
    ExecutionSeen,
    Forecasted,
    Notice,
    NotificationSent,
    RetryScheduled,
    RunFinished,
    RunLate,
    RunRecord,
    RunStarted,
    SignalReceived,
    StepFinished,
    StepRecord,
)
from runbook.render.wording import clock

__all__ = ["LiveView"]

_STYLES = {
    "pending": "dim",
    "running": "cyan",
    "succeeded": "green",
    "failed": "bold red",
    "skipped": "yellow",
    "cancelled": "yellow",
}
RECENT = 5  # finished steps still shown, newest first


class LiveView:
    """A rich Live display fed by executor events; ``stop()`` leaves the last frame."""

    def __init__(
        self, console: Console, *, clock: Callable[[], float] = time.time, max_rows: int = 30
    ) -> None:
        self.console = console
        self.clock = clock
        self.max_rows = max_rows
        self.run: RunRecord | None = None
        self.recent: list[StepRecord] = []
        self.eta: Forecasted | None = None
        self.live = Live(
            console=console, refresh_per_second=4, transient=False, get_renderable=self.render
        )

    def __call__(self, event: Event) -> None:
        match event:
            case RunStarted(run=run):
                self.run = run
                self.live.start()
            case StepFinished(step=step):
                self.recent = [step, *[s for s in self.recent if s is not step]][:RECENT]
            case RunFinished():
                self.stop()
            case Forecasted() as told:
                self.eta = told
            case (
                AttemptTriggering()
                | AttemptTriggered()
                | ExecutionSeen()
                | AttemptFinished()
                | RetryScheduled()
                | Notice()
                | SignalReceived()
                | RunLate()
                | NotificationSent()
            ):
                pass  # the frame is drawn from the run's record, refreshed 4 times a second
            case _:
                assert_never(event)

    def close(self) -> None:
        """Leave the last frame on the terminal."""
        self.stop()

    def stop(self) -> None:
        if self.live.is_started:
            self.live.refresh()
            self.live.stop()

    def render(self) -> Any:
        run = self.run
        if run is None:
            return Text("")
        steps = list(run.steps.values())
        counts = {state: sum(1 for s in steps if s.state == state) for state in _STYLES}
        header = Text.assemble(
            (f"{run.plan}", "bold"),
            f"  {len(steps)} steps: ",
            *[(f"{count} {state}  ", _STYLES[state]) for state, count in counts.items() if count],
            *(
                [(f"late: past its {format_duration(run.deadline or 0.0)} deadline", "bold red")]
                if run.late
                else []
            ),
            *(
                [(f"ETA {clock(self.eta.p50_end)} (p90 {clock(self.eta.p90_end)})", "cyan")]
                if self.eta is not None and not run.late
                else []
            ),
        )
        table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
        for column in ("stage", "step", "state", "attempt", "execution", "elapsed", "why"):
            table.add_column(column, justify="right" if column in ("stage", "attempt") else "left")
        watched = [s for s in steps if s.state == "running"]
        watched.sort(key=lambda s: (s.stage, s.name))
        failed = [s for s in steps if s.state == "failed" and s not in watched]
        finished = [s for s in self.recent if s.state != "failed"]
        shown = (watched + failed + finished)[: self.max_rows]
        for step in shown:
            table.add_row(*self._row(step))
        hidden = len(watched) + len(failed) + len(finished) - len(shown)
        footer = Text(f"... and {hidden} more running or failed" if hidden else "", style="dim")
        return Group(header, table, footer)

    def _row(self, step: StepRecord) -> list[Any]:
        attempt = step.attempt
        end = step.ended_at if step.ended_at is not None else self.clock()
        elapsed = format_duration(end - step.started_at) if step.started_at else ""
        execution = str(attempt.execution_id) if attempt and attempt.execution_id else ""
        state = step.state if step.state != "running" or attempt is None else attempt.state
        if step.ignored:
            state = "failed (ignored)"
        # why a clean-up step runs, or why a step ended as it did
        why = step.reason if step.state in ("skipped", "cancelled") else step.why
        return [
            str(step.stage),
            step.name,
            Text(state, style=_STYLES.get(step.state, "")),
            str(attempt.number) if attempt else "",
            execution,
            elapsed,
            Text(why or "", style="dim"),
        ]
