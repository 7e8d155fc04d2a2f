"""How the renderers word a run's moments: timestamps, a step's duration and state, a
late run, a forecast, a notification's delivery, a signal.

Plain lines, JSON lines, the summary, the live view, the report and the status views
say these things alike because they say them through here.
"""

from __future__ import annotations

from datetime import datetime, timezone

from runbook.apitimes import believed_span, seen_span
from runbook.durations import format_duration
from runbook.events import Forecasted, NotificationRecord, RunRecord, SignalReceived, StepRecord
from runbook.text import plural

__all__ = [
    "OUT_OF_RANGE",
    "clock",
    "delivery_text",
    "eta_text",
    "late_text",
    "risk_text",
    "shown_state",
    "signal_message",
    "stamp",
    "step_duration",
]


OUT_OF_RANGE = "(a time out of range)"
"""What a moment that no calendar can show is shown as (a damaged record, an absurd
forecast): words, never a crash."""


def _utc(epoch: float) -> datetime | None:
    try:
        return datetime.fromtimestamp(epoch, timezone.utc)
    except (OverflowError, OSError, ValueError, TypeError):
        return None


def stamp(epoch: float) -> str:
    """``2026-11-28T02:00:01Z`` (any value: one out of range is said so)."""
    moment = _utc(epoch)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else OUT_OF_RANGE


def clock(epoch: float) -> str:
    """``02:31:10Z`` (any value: one out of range is said so)."""
    moment = _utc(epoch)
    return moment.strftime("%H:%M:%SZ") if moment else OUT_OF_RANGE


def step_duration(step: StepRecord) -> float | None:
    """How long the step's last attempt ran: the API's start_at/end_at when they are
    believed (runbook.apitimes), else what runbook saw."""
    attempt = step.attempt
    if attempt is not None:
        claimed = believed_span(
            attempt.start_at, attempt.end_at, attempt.triggered_at, attempt.ended_at
        )
        if claimed is not None:
            return claimed[1] - claimed[0]
    seen = seen_span(step.started_at, step.ended_at)
    return None if seen is None else seen[1] - seen[0]


def shown_state(step: StepRecord) -> str:
    """``failed``, or ``failed (ignored)`` for a failure under ``on_failure: ignore``."""
    return "failed (ignored)" if step.ignored else step.state


def eta_text(told: Forecasted) -> str:
    """``the run should end at 02:31:10Z (p50), by 02:40:00Z (p90); critical path: ...``"""
    path = " -> ".join(told.critical_path)
    return (
        f"the run should end at {clock(told.p50_end)} (p50), by {clock(told.p90_end)} "
        f"(p90); critical path: {path}"
    )


def risk_text(told: Forecasted) -> str:
    run = told.run
    ident = f"run {run.run_id}" if run.run_id is not None else "the run"
    deadline = format_duration(run.deadline or 0.0)
    return (
        f"{ident} is at risk of missing its {deadline} deadline: its p90 end is "
        f"{clock(told.p90_end)}"
    )


def late_text(run: RunRecord) -> str:
    """``run 12 is late: still going past its 1h30m deadline``"""
    ident = f"run {run.run_id}" if run.run_id is not None else "the run"
    deadline = format_duration(run.deadline or 0.0)
    return f"{ident} is late: still going past its {deadline} deadline"


def delivery_text(record: NotificationRecord) -> str:
    """``the 'failed' notification to hooks.example.com was not delivered: HTTP 500
    (3 attempts)``, or, for a ping, ``the healthchecks 'start' ping ...``"""
    what = (
        f"the {record.event!r} notification"
        if record.kind == "webhook"
        else f"the healthchecks {record.event!r} ping"
    )
    if record.ok:
        return f"{what} to {record.target} was delivered"
    tries = f" ({plural(record.attempts, 'attempt')})" if record.attempts > 1 else ""
    return f"{what} to {record.target} was not delivered: {record.error}{tries}"


def signal_message(event: SignalReceived) -> str:
    """What a signal does, for stderr: the first stops the run, a second exits."""
    name = event.name
    if not event.first:
        return f"runbook: second {name}: exiting at once\n"
    wait = (
        f"; waiting for {plural(event.triggers_under_way, 'trigger')} under way to be "
        "answered, so that no execution id is lost (at most "
        f"{format_duration(event.grace)})"
        if event.triggers_under_way
        else ""
    )
    return f"runbook: {name}: stopping{wait} (a second {name} exits at once)\n"
