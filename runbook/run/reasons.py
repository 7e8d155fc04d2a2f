"""What a step's record says when it did not end on its own, in one place: the
executor, the resume's take-over and the Airflow trigger read them from here."""

from __future__ import annotations

from runbook.events import StepRecord

__all__ = ["TIMEOUT_REASON", "ambiguous", "halted", "not_retried"]

TIMEOUT_REASON = "timed out (the remote execution may still be running)"


def not_retried(reason: str | None) -> str:
    """A failure that a retry would have followed, had the run not begun to stop."""
    return f"{reason} (not retried: the run is stopping)"


def ambiguous(number: int) -> str:
    """A resumed step whose last trigger got no answer: it is not sent again."""
    return (
        f"the trigger of attempt {number} got no answer, so an execution may exist; not "
        "triggered again (--resume --retrigger-unknown triggers it anyway, at the risk of "
        "running it twice)"
    )


def halted(record: StepRecord, auth: bool) -> str:
    """Why a step is left pending by a run that halted (a signal; with ``auth``, the
    token was lost)."""
    attempt = record.attempt
    if attempt is None:
        if auth:
            return "not started: the run ended for want of a usable token"
        return "not started: the run was interrupted"
    if attempt.state == "not created":
        return "not started: its trigger was refused, and the run halted"
    if attempt.ended_at is not None:
        return f"interrupted before a retry; {record.reason}"
    if attempt.execution_id is None:
        return "interrupted while triggering"
    if auth:
        return (
            f"execution {attempt.execution_id} was {attempt.state} when the run lost its "
            "token; it may still be running on Nexadata"
        )
    return (
        f"interrupted while execution {attempt.execution_id} was {attempt.state}; "
        "it may still be running"
    )
