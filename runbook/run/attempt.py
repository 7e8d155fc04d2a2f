"""One attempt's life: trigger the step's workflow (or take over an execution an
earlier invocation triggered), poll the execution to its end within the step's
timeout, and say how it ended.

The trigger is never interrupted by a stop: a step whose POST is under way finishes
it and hands the execution id to the sinks before anything else (an interrupt waits
for it too, up to its grace). One timer bounds the whole attempt, polls and their
waits included.
"""

from __future__ import annotations

import asyncio
import random
import sys
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Literal, TypeVar

from runbook.api import Execution
from runbook.durations import format_duration
from runbook.errors import ApiError, ConfigError, TriggerOutcomeUnknown
from runbook.events import (
    AttemptFinished,
    AttemptRecord,
    AttemptTriggered,
    AttemptTriggering,
    ExecutionSeen,
    Notice,
    StepRecord,
)
from runbook.plan import Step
from runbook.polling import jittered
from runbook.run.reasons import TIMEOUT_REASON
from runbook.run.shell import Halt, Shell

__all__ = ["Attempt", "Ended", "Outcome", "poll_delay"]

Outcome = Literal["succeeded", "failed", "error"]
"""How an attempt ended for its step: ``failed``, its execution failed (a retry may
follow); ``error``, something no retry mends (a refused or unanswered trigger, a
timeout, an API error)."""
Ended = Literal["succeeded", "failed", "error", "unknown", "timed out"]
"""How an attempt ended as its :class:`~runbook.events.AttemptFinished` says it."""

T = TypeVar("T")

if sys.version_info >= (3, 11):

    async def _within(awaitable: Awaitable[T], seconds: float) -> T:
        """``awaitable``, cancelled with TimeoutError after ``seconds`` (no extra task)."""
        async with asyncio.timeout(seconds):
            return await awaitable

else:  # pragma: no cover - Python 3.10
    _within = asyncio.wait_for


def poll_delay(step: Step, elapsed: float, rng: random.Random) -> float:
    """The wait before the next poll of an execution running for ``elapsed`` seconds:
    the step's ``poll_wait`` (runbook.polling's cadence), with up to 10 % of jitter
    downwards so that thousands of executions triggered together do not poll together."""
    return jittered(step.poll_wait(elapsed), rng)


@dataclass(eq=False, slots=True)
class Attempt:
    """One attempt of ``step``: its record, and the execution as last seen."""

    shell: Shell
    step: Step
    record: StepRecord
    attempt: AttemptRecord
    execution: Execution | None = None
    started: float = 0.0
    """Monotonic seconds when the trigger was sent: the step's timeout counts from it."""
    warned: bool = False
    """The execution reported a state runbook does not know (said once)."""

    @classmethod
    async def trigger(
        cls, shell: Shell, step: Step, record: StepRecord, number: int
    ) -> tuple[Outcome, str | None]:
        """Trigger ``step``'s workflow and poll the execution to its end."""
        attempt = AttemptRecord(number=number, triggered_at=shell.clock.wall())
        record.attempts.append(attempt)
        if record.state == "pending":
            record.state, record.started_at = "running", attempt.triggered_at
        self = cls(shell, step, record, attempt)
        shell.triggering.add(step.name)
        try:
            await shell.bus.emit(AttemptTriggering(record, attempt, attempt.triggered_at))
            self.started = shell.clock.monotonic()
            try:
                execution = await _within(shell.api.trigger(step.workflow_id), step.timeout)
            except asyncio.TimeoutError:  # the step's timeout bounds the request too
                attempt.state = "unknown"
                return await self._over("unknown", self._unanswered())
            except TriggerOutcomeUnknown as error:
                attempt.state = "unknown"
                return await self._over("unknown", str(error))
            except ConfigError:  # refused before anything was created: a bad token, TLS
                attempt.state = "not created"
                await self._over("error", None)
                raise
            except ApiError as error:
                attempt.state = "not created"
                return await self._over("error", str(error))
            self._observe(execution)
            await shell.bus.emit(AttemptTriggered(record, attempt, shell.clock.wall()))
        finally:
            shell.triggering.discard(step.name)
        if shell.halted is not None:
            raise Halt
        return await self._poll()

    @classmethod
    async def reattach(
        cls, shell: Shell, step: Step, record: StepRecord, attempt: AttemptRecord
    ) -> tuple[Outcome, str | None]:
        """Poll an execution a previous invocation triggered: never trigger it again.
        Its timeout counts from that trigger."""
        clock = shell.clock
        record.state = "running"
        raw = attempt.record or {"id": attempt.execution_id, "state": attempt.state}
        execution = Execution.from_record(raw)
        self = cls(shell, step, record, attempt, execution)
        self.started = clock.monotonic() - max(0.0, clock.wall() - attempt.triggered_at)
        await shell.bus.emit(
            Notice(
                f"re-attached to execution {execution.id}, triggered by an earlier invocation",
                clock.wall(),
                record,
                level="info",
            )
        )
        return await self._poll()

    @property
    def deadline(self) -> float:
        """Monotonic seconds when the step's timeout runs out."""
        return self.started + self.step.timeout

    async def _poll(self) -> tuple[Outcome, str | None]:
        """Poll to the end under one timer for the whole attempt, not one per poll."""
        try:
            ended, reason = await _within(
                self._poll_to_end(), max(0.0, self.deadline - self.shell.clock.monotonic())
            )
        except asyncio.TimeoutError:  # a slow answer, a long Retry-After, or just long
            ended, reason = "timed out", TIMEOUT_REASON
        return await self._over(ended, reason)

    async def _poll_to_end(self) -> tuple[Ended, str | None]:
        clock, step, execution = self.shell.clock, self.step, self.execution
        assert execution is not None  # triggered or re-attached
        while not execution.terminal:
            now = clock.monotonic()
            if now >= self.deadline:
                return "timed out", TIMEOUT_REASON
            wait = poll_delay(step, now - self.started, clock.rng)
            await clock.sleep(min(wait, self.deadline - now))
            try:
                latest = await self.shell.api.get_execution(execution.id)
            except ConfigError:
                raise
            except ApiError as error:
                return "error", str(error)
            if latest.raw != execution.raw:
                previous = self.attempt.state
                self._observe(latest)
                await self.shell.bus.emit(
                    ExecutionSeen(self.record, self.attempt, previous, clock.wall())
                )
            execution = self.execution = latest
            if not execution.known_state and not self.warned:
                self.warned = True
                await self.shell.bus.emit(
                    Notice(
                        f"execution {execution.id} reports an unknown state {execution.state!r}; "
                        "polling on until the step's timeout",
                        clock.wall(),
                        self.record,
                    )
                )
        if execution.state == "succeeded":
            return "succeeded", None
        return "failed", f"execution {execution.id} failed"

    def _observe(self, execution: Execution) -> None:
        attempt = self.attempt
        self.execution = execution
        attempt.execution_id = execution.id
        attempt.state = execution.state
        attempt.start_at, attempt.end_at = execution.start_at, execution.end_at
        attempt.errors, attempt.warnings = execution.errors, execution.warnings
        attempt.record = dict(execution.raw)

    async def _over(self, ended: Ended, reason: str | None) -> tuple[Outcome, str | None]:
        self.attempt.ended_at = self.shell.clock.wall()
        await self.shell.bus.emit(
            AttemptFinished(self.record, self.attempt, ended, self.attempt.ended_at)
        )
        if ended == "succeeded" or ended == "failed":
            return ended, reason
        return "error", reason

    def _unanswered(self) -> str:
        step = self.step
        return (
            f"trigger outcome unknown for workflow {step.workflow_id}: the step's timeout "
            f"({format_duration(step.timeout)}) ran out before the API answered; an "
            "execution may have been created, so it was not sent again"
        )
