"""The run's outcome in a few lines, for a terminal, a cron mail and a ping: the counts,
then every step that did not succeed, and what a lost token left behind."""

from __future__ import annotations

from typing import TextIO

from runbook.conditions import is_cleanup
from runbook.durations import format_duration
from runbook.events import RunRecord, StepRecord
from runbook.render.wording import delivery_text
from runbook.text import plural

__all__ = ["count_text", "state_counts", "write_summary"]


def state_counts(run: RunRecord) -> dict[str, int]:
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
        ", ".join(_count_text(state, count) for state, count in state_counts(run).items())
        or "no steps"
    )


def write_summary(out: TextIO, run: RunRecord, *, resume_hint: str | None = None) -> None:
    """The run's outcome in a few lines: counts, then every step that did not succeed."""
    end = run.ended_at or run.started_at
    took = format_duration(end - run.started_at)
    if run.invocations > 1 and run.first_started is not None:  # the run's time, not this one's
        took = (
            f"{format_duration(end - run.first_started)} over {run.invocations} invocations "
            f"(this one {took})"
        )
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
    # what a clean-up that ran did, for whoever was paged
    cleaned = [
        step
        for step in run.ordered()
        if is_cleanup(step.run_if) and step.state == "succeeded" and step.attempts
    ]
    if run.state == "succeeded":
        cleaned = []
    width = max((len(step.name) for step in [*problems, *cleaned]), default=0)
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
    for step in cleaned:
        why = f"; started because {step.why}" if step.why else ""
        out.write(
            f"  {'CLEAN-UP':<9} {step.name:<{width}}  workflow {step.workflow_id}: succeeded{why}\n"
        )
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
        if step.state == "pending" and step.attempt is None and is_cleanup(step.run_if)
    ]
    if cleanup:
        out.write(
            f"  not run without a token: {', '.join(cleanup)} (clean-up, finally); "
            "--resume runs them when their run_if holds\n"
        )
