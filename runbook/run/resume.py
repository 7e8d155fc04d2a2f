"""What a resume takes over from the run it continues, decided on the journal's
records alone (no I/O, no clock): which steps stay done, which executions are polled
again, which triggers are too uncertain to send again; and what a run left running.

A step is matched by name and workflow id; a new or changed step runs as new. A step
that succeeded stays done — a clean-up step (``run_if: failure``, ``always``, or a
mapping that accepts a failure or a skip) only while none of
its upstreams runs again. An execution whose end was not seen is polled again, never
triggered a second time. A trigger that got no answer may have created an execution:
it is not repeated unless the user asks (``--retrigger-unknown``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from runbook.conditions import is_cleanup
from runbook.events import TERMINAL_STATES, AttemptRecord, RunRecord, StepRecord
from runbook.run import reasons

__all__ = ["Flying", "Resumed", "left_running", "outcome_unseen", "take_over"]


@dataclass(frozen=True, slots=True)
class Resumed:
    """What a resume goes on with. Every name is a step of the new run."""

    carried: Mapping[str, StepRecord] = field(default_factory=dict)
    """The earlier record of each step matched by name and workflow id: its attempts
    and times carry over."""
    kept: tuple[str, ...] = ()
    """Steps that stay succeeded, in start order."""
    reattach: Mapping[str, AttemptRecord] = field(default_factory=dict)
    """The last attempt of each step whose execution is polled again."""
    ambiguous: Mapping[str, str] = field(default_factory=dict)
    """Steps whose last trigger got no answer, with the reason they fail instead."""


def take_over(
    prior: RunRecord,
    steps: Mapping[str, StepRecord],
    *,
    upstreams: Callable[[str], Iterable[str]],
    order: Iterable[str],
    retrigger_unknown: bool,
) -> Resumed:
    """What the new run's ``steps`` (visited in ``order``, upstreams first) take over of
    ``prior``; ``upstreams(name)`` are a step's upstreams within the new run."""
    carried: dict[str, StepRecord] = {}
    kept: list[str] = []
    done: set[str] = set()
    reattach: dict[str, AttemptRecord] = {}
    ambiguous: dict[str, str] = {}
    for name in order:
        old = prior.steps.get(name)
        if old is None or old.workflow_id != steps[name].workflow_id:
            continue  # a new or changed step: it runs as new
        carried[name] = old
        last = old.attempt
        if old.state == "succeeded" or (
            last is not None and last.ended_at is not None and last.state == "succeeded"
        ):  # (killed between the attempt's end and the step's: the attempt decides)
            if not is_cleanup(steps[name].run_if) or all(up in done for up in upstreams(name)):
                kept.append(name)
                done.add(name)
            # else judged again: an upstream runs again
        elif (
            last is not None
            and last.execution_id is not None
            and (last.ended_at is None or outcome_unseen(old, last))
        ):
            reattach[name] = last
        elif (
            last is not None
            and not retrigger_unknown
            and (last.state == "unknown" or (last.ended_at is None and last.execution_id is None))
        ):
            ambiguous[name] = reasons.ambiguous(last.number)
    return Resumed(carried, tuple(kept), reattach, ambiguous)


Flying = list[tuple[StepRecord, int]]


def left_running(run: RunRecord) -> tuple[Flying, Flying]:
    """The executions ``run`` left without seeing them end, as (step, execution id): those
    a new run would duplicate (its process died, a signal or a lost token or API stopped
    it; id 0: a trigger cut off unanswered, which may have created one), and those whose
    step timed out (the step's outcome is decided; they may still run on Nexadata)."""
    unseen: Flying = []
    timed_out: Flying = []
    for step in run.ordered():
        attempt = step.attempt
        if attempt is None:
            continue
        if attempt.execution_id is None:  # a POST cut off unanswered: one may exist
            if attempt.ended_at is None and attempt.state != "not created":
                unseen.append((step, 0))
            continue
        if attempt.ended_at is None or outcome_unseen(step, attempt):
            unseen.append((step, attempt.execution_id))
        elif step.reason == reasons.TIMEOUT_REASON and attempt.state not in TERMINAL_STATES:
            timed_out.append((step, attempt.execution_id))
    return unseen, timed_out


def outcome_unseen(step: StepRecord, attempt: AttemptRecord) -> bool:
    """The attempt ended without runbook seeing how its execution ended, because the
    API could not be polled (not because of the step's timeout, a policy): the execution
    may have run on, so a resume polls it again rather than triggering a second one."""
    return (
        attempt.state not in TERMINAL_STATES
        and attempt.state != "unknown"
        and step.state == "failed"
        and step.reason != reasons.TIMEOUT_REASON
    )
