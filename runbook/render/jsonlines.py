"""What ``apply --log-format json`` prints: one JSON object per event per line, for log
shippers; and the JSON shape of an attempt and of what is in flight, which the report
shares."""

from __future__ import annotations

import json
from typing import Any, TextIO

from runbook import conditions
from runbook._compat import assert_never
from runbook.events import (
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
    RunRecord,
    RunStarted,
    SignalReceived,
    StepFinished,
    StepRecord,
)
from runbook.render.summary import state_counts
from runbook.render.wording import delivery_text, late_text, risk_text, stamp

__all__ = ["JsonLines", "attempt_fields", "in_flight_fields"]


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
                document.update(counts=state_counts(run), reason=run.reason)
                document.update(auth=run.auth, token_refreshes=run.token_refreshes)
            case StepFinished(step=step):
                document.update(
                    step=step.name,
                    workflow_id=step.workflow_id,
                    state=step.state,
                    reason=step.reason,
                    run_if=conditions.written(step.run_if),
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
