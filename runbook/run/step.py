"""A step's attempts: the first, then a retry after each failed execution while
retries are left and the run goes on; each attempt holds a slot from its trigger to
its execution's end, and none while it waits out ``retry_delay``.

Only an execution that failed is retried: a refused or unanswered trigger, a timeout
or an API error is not (a second trigger could run the workflow twice). Once the run
begins to stop, no retry is sent — whether the step is between attempts, waiting out
the delay, or waiting for a slot.
"""

from __future__ import annotations

import asyncio

from runbook.events import AttemptRecord, Notice, RetryScheduled, StepRecord
from runbook.plan import Step
from runbook.run.attempt import Attempt
from runbook.run.reasons import not_retried
from runbook.run.shell import Halt, Shell
from runbook.schedule import Ending

__all__ = ["run_step"]


async def run_step(
    shell: Shell,
    step: Step,
    record: StepRecord,
    priority: tuple[int, str],
    *,
    reattach: AttemptRecord | None = None,
    ambiguous: str | None = None,
) -> tuple[Ending, str | None]:
    """Run ``step``'s attempts to its ending and the reason for a failure.

    ``reattach``: the execution of an earlier invocation to poll first, instead of a
    trigger. ``ambiguous``: the step's last trigger got no answer: it fails with that
    reason, triggering nothing. Raises :class:`Halt` if the step must not go on (an
    interrupt, or a stop that ended it before it started); the slots' ``Refused``
    likewise, when no slot was granted.
    """
    if ambiguous is not None:
        return "failed", ambiguous
    core, done = shell.core, len(record.attempts)
    reason: str | None = None
    for tried in range(1, step.retries + 2):
        async with shell.slots.held(priority, step.name):
            if tried == 1 and reattach is None:
                if not core.start(step.name):
                    raise Halt  # a stop ended it as its slot came free
                await _say_why(shell, record)
            elif tried > 1 and not core.may_retry(step.name):
                return "failed", not_retried(reason)  # the run began to stop meanwhile
            if reattach is not None:
                outcome, reason = await Attempt.reattach(shell, step, record, reattach)
                reattach = None
            else:
                outcome, reason = await Attempt.trigger(shell, step, record, done + tried)
        if outcome == "succeeded":
            return "succeeded", None
        if outcome == "error" or tried == step.retries + 1:
            if outcome == "failed" and tried > 1:
                reason = f"{reason} (attempt {tried} of {tried})"
            return "failed", reason
        if not await _wait_to_retry(shell, step, record, reason):
            return "failed", not_retried(reason)
    raise AssertionError("unreachable: the last attempt returns")  # pragma: no cover


async def _wait_to_retry(shell: Shell, step: Step, record: StepRecord, reason: str | None) -> bool:
    """Wait out ``retry_delay``; False if the run began to stop before or meanwhile (a
    stop ends the wait at once; an interrupt cancels the step)."""
    if not shell.core.may_retry(step.name):
        return False
    record.reason = reason
    await shell.bus.emit(RetryScheduled(record, step.retry_delay, shell.clock.wall()))
    shell.waiting_retry.add(step.name)
    try:
        await shell.clock.sleep(step.retry_delay)
    except asyncio.CancelledError:
        if shell.halted is not None:
            raise
        # a stop cancelled the wait: the failure stands
    finally:
        shell.waiting_retry.discard(step.name)
    return shell.core.may_retry(step.name)


async def _say_why(shell: Shell, record: StepRecord) -> None:
    """Say why a clean-up step starts (its run_if held on its upstreams' ends)."""
    why = shell.core.start_reason(record.name)
    if why is not None:
        record.why = why
        await shell.bus.emit(Notice(f"starting: {why}", shell.clock.wall(), record, level="info"))
