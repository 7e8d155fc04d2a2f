"""What ``apply`` prints off a terminal: one line per event, and the final summary.

Plain lines carry a UTC timestamp, the step, the workflow id and the execution id, so
that a cron mail or a CI log says what happened without the journal. JSON lines carry
the same, one object per event, for log shippers.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, TextIO

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
    NotificationRecord,
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
from runbook.text import parse_timestamp, plural

__all__ = [
    "JsonLines",
    "PlainLines",
    "attempt_fields",
    "count_text",
    "delivery_text",
    "eta_text",
    "in_flight_fields",
    "late_text",
    "signal_message",
    "stamp",
    "step_duration",
    "write_summary",
]


def stamp(epoch: float) -> str:
    """``2026-11-28T02:00:01Z``"""
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def step_duration(step: StepRecord) -> float | None:
    """How long the step's last attempt ran: the API's start_at/end_at when it gave
    them, else what runbook saw."""
    attempt = step.attempt
    if attempt is not None:
        start, end = parse_timestamp(attempt.start_at), parse_timestamp(attempt.end_at)
        if start is not None and end is not None:
            return max(0.0, (end - start).total_seconds())
    if step.started_at is not None and step.ended_at is not None:
        return max(0.0, step.ended_at - step.started_at)
    return None


def shown_state(step: StepRecord) -> str:
    """``failed``, or ``failed (ignored)`` for a failure under ``on_failure: ignore``."""
    return "failed (ignored)" if step.ignored else step.state


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


def clock(epoch: float) -> str:
    """``02:31:10Z``"""
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%H:%M:%SZ")


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


def attempt_fields(attempt: AttemptRecord) -> dict[str, Any]:
    """An attempt as the report (docs/cli.md) shows it."""
    return {
        "execution_id": attempt.execution_id,
        "state": attempt.state,
        "start_at": attempt.start_at,
        "end_at": attempt.end_at,
        "errors": list(attempt.errors),
        "warnings": list(attempt.warnings),
    }


def in_flight_fields(run: RunRecord) -> list[dict[str, Any]]:
    """``[{"step", "workflow_id", "execution_id"}]``: what may still run on Nexadata."""
    return [
        {"step": step.name, "workflow_id": step.workflow_id, "execution_id": execution_id}
        for step, execution_id in run.in_flight()
    ]


def _attempt_json(attempt: AttemptRecord | None) -> dict[str, Any] | None:
    return None if attempt is None else {"number": attempt.number, **attempt_fields(attempt)}


class JsonLines:
    """One JSON object per event per line: ``{"time", "event", "step", ...}``."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def __call__(self, event: Event) -> None:
        document: dict[str, Any] = {"time": stamp(event.at), "event": _EVENT_NAMES[type(event)]}
        match event:
            case RunStarted(run=run):
                document.update(plan=run.plan, run_id=run.run_id, state=run.state, auth=run.auth)
            case RunFinished(run=run):
                if run.auth_failed:  # its own line first: what a log alert keys on
                    self._auth_error(event.at, run)
                document.update(plan=run.plan, run_id=run.run_id, state=run.state)
                document.update(counts=_counts(run), reason=run.reason)
                document.update(auth=run.auth, token_refreshes=run.token_refreshes)
            case StepFinished(step=step):
                document.update(
                    step=step.name,
                    workflow_id=step.workflow_id,
                    state=step.state,
                    reason=step.reason,
                    run_if=step.run_if,
                    ignored=step.ignored,
                    attempt=_attempt_json(step.attempt),
                )
            case Notice(step=step, level=level, message=message):
                if step is not None:
                    document.update(step=step.name, workflow_id=step.workflow_id)
                document.update(level=level, message=message)
            case SignalReceived(name=name, first=first, triggers_under_way=waiting):
                document.update(signal=name, first=first, triggers_under_way=waiting)
            case RunLate(run=run):
                document.update(plan=run.plan, run_id=run.run_id, level="warning")
                document.update(deadline=run.deadline, message=late_text(run))
            case Forecasted() as told:
                document.update(
                    plan=told.run.plan,
                    run_id=told.run.run_id,
                    level="warning" if told.at_risk else "info",
                    p50_end=stamp(told.p50_end),
                    p90_end=stamp(told.p90_end),
                    critical_path=list(told.critical_path),
                    at_risk=told.at_risk,
                )
                if told.at_risk:
                    document["message"] = risk_text(told)
            case NotificationSent(record=record):
                document.update(
                    level="info" if record.ok else "warning",
                    kind=record.kind,
                    notification=record.event,
                    target=record.target,
                    ok=record.ok,
                    error=record.error,
                    attempts=record.attempts,
                    message=delivery_text(record),
                )
            case AttemptTriggering() | AttemptTriggered() | ExecutionSeen():
                document.update(_attempt_fields(event.step, event.attempt))
            case AttemptFinished(step=step, attempt=attempt, outcome=outcome):
                document.update(_attempt_fields(step, attempt), outcome=outcome)
            case RetryScheduled(step=step, delay=delay):
                document.update(_attempt_fields(step, step.attempt), delay=delay)
            case _:
                assert_never(event)
        self.out.write(json.dumps(document, separators=(",", ":")) + "\n")
        self.out.flush()

    def _auth_error(self, at: float, run: RunRecord) -> None:
        document = {
            "time": stamp(at),
            "event": "error",
            "kind": "auth",
            "plan": run.plan,
            "run_id": run.run_id,
            "level": "error",
            "message": run.reason,
            "in_flight": in_flight_fields(run),
        }
        self.out.write(json.dumps(document, separators=(",", ":")) + "\n")

    def close(self) -> None:
        """Nothing to stop: every line is written as its event comes."""


def _attempt_fields(step: StepRecord, attempt: AttemptRecord | None) -> dict[str, Any]:
    return {"step": step.name, "workflow_id": step.workflow_id, "attempt": _attempt_json(attempt)}


_EVENT_NAMES: dict[type[Event], str] = {
    RunStarted: "run_started",
    AttemptTriggering: "attempt_triggering",
    AttemptTriggered: "attempt_triggered",
    ExecutionSeen: "execution_seen",
    AttemptFinished: "attempt_finished",
    RetryScheduled: "retry_scheduled",
    StepFinished: "step_finished",
    Notice: "notice",
    SignalReceived: "signal",
    RunLate: "late",
    Forecasted: "forecast",
    NotificationSent: "notification",
    RunFinished: "run_finished",
}


def _counts(run: RunRecord) -> dict[str, int]:
    """Steps by state; a failure under ``on_failure: ignore`` counts as ``ignored``."""
    ignored = sum(1 for step in run.steps.values() if step.ignored)
    counts = {
        "succeeded": run.count("succeeded"),
        "failed": run.count("failed") - ignored,
        "ignored": ignored,
    }
    counts.update((state, run.count(state)) for state in ("skipped", "cancelled", "pending"))
    counts["running"] = run.count("running")
    return {state: count for state, count in counts.items() if count}


def _count_text(state: str, count: int) -> str:
    return plural(count, "failure") + " ignored" if state == "ignored" else f"{count} {state}"


_SUMMARY_ORDER = ("failed", "pending", "running", "skipped", "cancelled", "ignored")


def _label(step: StepRecord) -> str:
    return "ignored" if step.ignored else step.state


def count_text(run: RunRecord) -> str:
    """``9 succeeded, 1 failed, 1 skipped``"""
    return (
        ", ".join(_count_text(state, count) for state, count in _counts(run).items()) or "no steps"
    )


def write_summary(out: TextIO, run: RunRecord, *, resume_hint: str | None = None) -> None:
    """The run's outcome in a few lines: counts, then every step that did not succeed."""
    took = format_duration((run.ended_at or run.started_at) - run.started_at)
    counts = count_text(run)
    ident = f"Run {run.run_id} of" if run.run_id is not None else "Run of"
    out.write(f"{ident} {run.plan} {run.state} in {took}: {counts}\n")
    if run.reason and run.state != "succeeded":
        out.write(f"  {run.reason}\n")
    if run.late:
        out.write(f"  late: it passed its {format_duration(run.deadline or 0.0)} deadline\n")
    if run.state != "succeeded":  # for a cron mail: the warnings went to stderr
        for record in run.notifications:
            if not record.ok:
                out.write(f"  {delivery_text(record)}\n")
    problems = [step for step in run.steps.values() if step.state != "succeeded"]
    problems.sort(key=lambda s: (_SUMMARY_ORDER.index(_label(s)), s.stage, s.name))
    width = max((len(step.name) for step in problems), default=0)
    for step in problems:
        attempt = step.attempt
        execution = (
            f"  execution {attempt.execution_id}" if attempt and attempt.execution_id else ""
        )
        out.write(
            f"  {_label(step).upper():<9} {step.name:<{width}}  workflow {step.workflow_id}"
            f"{execution}: {step.reason}\n"
        )
        if step.state == "failed" and attempt is not None:
            for error in attempt.errors:
                out.write(f"  {'':<9} {'':<{width}}  error: {error}\n")
    if run.auth_failed:
        _write_lost_token(out, run)
    if resume_hint:
        out.write(f"{resume_hint}\n")
    out.flush()


def _write_lost_token(out: TextIO, run: RunRecord) -> None:
    """After an authentication failure: what may still run on Nexadata, and the clean-up
    that could not be triggered without a token."""
    for step, execution_id in run.in_flight():
        out.write(
            f"  in flight: {step.name} (workflow {step.workflow_id}, execution "
            f"{execution_id}) may still be running on Nexadata\n"
        )
    cleanup = [
        step.name
        for step in run.ordered()
        if step.state == "pending" and step.attempt is None and step.run_if != "success"
    ]
    if cleanup:
        out.write(
            f"  not run without a token: {', '.join(cleanup)} (clean-up, finally); "
            "--resume runs them when their run_if holds\n"
        )
