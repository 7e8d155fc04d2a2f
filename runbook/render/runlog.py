"""What ``apply`` prints off a terminal: one plain line per event.

A line carries a UTC timestamp, the step, the workflow id and the execution id, so that
a cron mail or a CI log says what happened without the journal. JSON lines are
:mod:`runbook.render.jsonlines`, the final summary :mod:`runbook.render.summary`.
"""

from __future__ import annotations

from typing import TextIO

from runbook._compat import assert_never
from runbook.durations import format_duration
from runbook.events import (
    TERMINAL_STATES,
    AttemptFinished,
    AttemptRecord,
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
    RunStarted,
    SignalReceived,
    StepFinished,
    StepRecord,
)
from runbook.render.wording import (
    eta_text,
    late_text,
    risk_text,
    shown_state,
    stamp,
    step_duration,
)
from runbook.text import plural

__all__ = ["PlainLines", "describe"]


def _who(step: StepRecord, attempt: AttemptRecord | None = None) -> str:
    text = f"{step.name} (workflow {step.workflow_id}"
    if attempt is not None and attempt.execution_id is not None:
        text += f", execution {attempt.execution_id}"
    return text + ")"


def describe(event: Event) -> str | None:
    """One line of text for an event (without its timestamp), or None to say nothing."""
    match event:
        case RunStarted(run=run):
            ident = f"run {run.run_id} " if run.run_id is not None else "run "
            done = f", {len(run.assumed_done)} taken as done" if run.assumed_done else ""
            return (
                f"{ident}started: plan {run.plan}, {plural(len(run.steps), 'workflow')}"
                f"{done}, max_parallel {run.max_parallel}"
            )
        case AttemptTriggering(step=step, attempt=attempt):
            return f"{_who(step)}: triggering (attempt {attempt.number})"
        case AttemptTriggered(step=step, attempt=attempt):
            return f"{_who(step, attempt)}: {attempt.state}"
        case ExecutionSeen(step=step, attempt=attempt, previous_state=previous):
            if previous == attempt.state or attempt.state in TERMINAL_STATES:
                return None  # a terminal state is told by the step's (or the retry's) line
            return f"{_who(step, attempt)}: {attempt.state}"
        case AttemptFinished(step=step, attempt=attempt, outcome=outcome):
            if outcome in ("succeeded", "failed"):
                return None  # the step's line says it; a retry says it too
            return f"{_who(step, attempt)}: attempt {attempt.number} {outcome}"
        case RetryScheduled(step=step, delay=delay):
            last = step.attempt
            errors = f": {'; '.join(last.errors)}" if last and last.errors else ""
            return f"{_who(step, last)}: failed{errors}; retrying in {format_duration(delay)}"
        case StepFinished(step=step):
            duration = step_duration(step)
            took = f" in {format_duration(duration)}" if duration is not None else ""
            if step.state == "succeeded":
                return f"{_who(step, step.attempt)}: succeeded{took}"
            failures = step.attempt.errors if step.attempt and step.state == "failed" else ()
            detail = f" [{'; '.join(failures)}]" if failures else ""
            return f"{_who(step, step.attempt)}: {shown_state(step)}: {step.reason}{detail}"
        case Notice(step=step, level=level, message=message):
            where = f"{_who(step, step.attempt)}: " if step else ""
            return f"{where}{'warning: ' if level == 'warning' else ''}{message}"
        case RunLate(run=run):
            return f"warning: {late_text(run)}"
        case Forecasted(at_risk=True) as told:
            return f"warning: {risk_text(told)}"
        case Forecasted(first=True) as told:
            return f"forecast: {eta_text(told)}"
        case Forecasted():
            return None  # recomputed as steps end: the live view and JSON lines show it
        case SignalReceived() | NotificationSent() | RunFinished():
            # a signal and a failed delivery are told on stderr; the summary follows
            # the run's end
            return None
        case _:
            assert_never(event)


class PlainLines:
    """``2026-11-28T02:00:01Z transform (workflow 42, execution 171): running``"""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def __call__(self, event: Event) -> None:
        text = describe(event)
        if text is not None:
            self.out.write(f"{stamp(event.at)} {text}\n")
            self.out.flush()

    def close(self) -> None:
        """Nothing to stop: every line is written as its event comes."""
