"""What a step's record says when it did not end on its own, in one place: the
executor, the resume's take-over and the Airflow trigger read them from here."""

from __future__ import annotations

from runbook.errors import ApiUnreachable, AuthError, ConfigError
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


def halted(record: StepRecord, fatal: ConfigError | None = None) -> str:
    """Why a step is left pending by a run that halted: a signal, or the ``fatal``
    error that stopped it (the token lost, the API out of reach)."""
    auth = isinstance(fatal, AuthError)
    unreached = isinstance(fatal, ApiUnreachable)
    attempt = record.attempt
    if attempt is None:
        if auth:
            return "not started: the run ended for want of a usable token"
        if unreached:
            return "not started: the run stopped, as the API could not be reached"
        if fatal is not None:
            return "not started: the run stopped on a configuration error"
        return "not started: the run was interrupted"
    if attempt.state == "not created":
        if unreached:
            return "not started: its trigger could not reach the API, and the run stopped"
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
