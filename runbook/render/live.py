"""The live view on a terminal: the steps worth watching, as many as the terminal has
rows for, the rest as counts.

Redrawn a few times a second by rich; it stays one screen for a 200-step plan. Rows go
first to what runs (and what waits for its retry, with the countdown), then to what
failed (with its reason and the API's error), then to what is pending (and why: the
upstreams it waits for, or a free slot), then to what ended most recently; the steps
that get no row are counted by state in the last line.
"""

from __future__ import annotations

import time
from collections import Counter
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
RECENT = 5  # finished steps kept for the view, newest first
CHROME = 4  # rows the header, the table's head, the last line and the cursor take


class LiveView:
    """A rich Live display fed by executor events; ``stop()`` leaves the last frame."""

    def __init__(
        self,
        console: Console,
        *,
        clock: Callable[[], float] = time.time,
        max_rows: int | None = None,
    ) -> None:
        """``max_rows``: the steps shown at most (None: as many as the terminal's
        height holds, read at every frame)."""
        self.console = console
        self.clock = clock
        self.max_rows = max_rows
        self.run: RunRecord | None = None
        self.recent: list[StepRecord] = []
        self.retry_at: dict[str, float] = {}
        """Steps waiting for their next attempt, and when it is due."""
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
                self.retry_at.pop(step.name, None)
            case RetryScheduled(step=step, delay=delay, at=at):
                self.retry_at[step.name] = at + delay
            case AttemptTriggering(step=step):
                self.retry_at.pop(step.name, None)
            case RunFinished():
                self.stop()
            case Forecasted() as told:
                self.eta = told
            case (
                AttemptTriggered()
                | ExecutionSeen()
                | AttemptFinished()
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
        rows = self.max_rows
        if rows is None:
            rows = max(3, self.console.size.height - CHROME)
        ordered = sorted(steps, key=lambda s: (s.stage, s.name))
        recent = [s for s in self.recent if s.state not in ("running", "pending", "failed")]
        ended = [s for s in ordered if s.state not in ("running", "pending", "failed")]
        ended.sort(key=lambda s: s not in recent)  # the most recent first, then the others
        groups = (
            [s for s in ordered if s.state == "running"],
            [s for s in ordered if s.state == "failed"],
            [s for s in ordered if s.state == "pending"],
            ended,
        )
        shown = [step for group in groups for step in group][:rows]
        for step in shown:
            table.add_row(*self._row(step))
        unshown: Counter[str] = Counter(step.state for step in steps)
        unshown.subtract(step.state for step in shown)
        footer = Text(
            "... and "
            + ", ".join(f"{unshown[state]} more {state}" for state in _STYLES if unshown[state])
            if any(unshown.values())
            else "",
            style="dim",
        )
        return Group(header, table, footer)

    def _row(self, step: StepRecord) -> list[Any]:
        attempt = step.attempt
        end = step.ended_at if step.ended_at is not None else self.clock()
        elapsed = format_duration(end - step.started_at) if step.started_at else ""
        execution = str(attempt.execution_id) if attempt and attempt.execution_id else ""
        state = step.state if step.state != "running" or attempt is None else attempt.state
        why = self._why(step)
        due = self.retry_at.get(step.name)
        if step.state == "running" and due is not None:
            state = f"retry in {format_duration(max(0.0, due - self.clock()))}"
        if step.ignored:
            state = "failed (ignored)"
        return [
            str(step.stage),
            step.name,
            Text(state, style=_STYLES.get(step.state, "")),
            str(attempt.number) if attempt else "",
            execution,
            elapsed,
            Text(why or "", style="dim"),
        ]

    def _why(self, step: StepRecord) -> str | None:
        """Why a step is where it is: a clean-up step's start, an end's reason (with the
        API's first error), what a pending step waits for."""
        run = self.run
        match step.state:
            case "failed" | "running" if step.reason and (
                step.state == "failed" or step.name in self.retry_at
            ):
                attempt = step.attempt
                errors = attempt.errors if attempt is not None else ()
                return f"{step.reason}: {errors[0]}" if errors else step.reason
            case "skipped" | "cancelled":
                return step.reason
            case "pending" if run is not None:
                waiting = [
                    up
                    for up in step.upstreams
                    if up in run.steps and run.steps[up].state in ("pending", "running")
                ]
                if waiting:
                    more = f" and {len(waiting) - 3} more" if len(waiting) > 3 else ""
                    return f"after {', '.join(waiting[:3])}{more}"
                return f"waiting for a slot (max_parallel {run.max_parallel})"
            case _:
                return step.why
