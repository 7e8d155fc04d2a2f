"""What the journal writes: the statements of each event (:func:`statements_for`), of a
run's first row and of its resume. Pure: no connection, no clock; the sink and the
store execute them.

The sacred write: an attempt is written *triggering* before its POST, and its
execution id as soon as the answer arrives; the executor waits for both to be
committed before it goes on, as it does before a retry's wait (the failed attempt is
durable before a wait that may be long) and at the run's end.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

from runbook._compat import assert_never
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
    RunRecord,
    RunStarted,
    SignalReceived,
    StepFinished,
    StepRecord,
)
from runbook.journal.schema import (
    ATTEMPTS,
    NOTIFICATIONS,
    RUNS,
    STEPS,
    Batch,
    Statement,
    insert,
    insert_rows,
    update,
    upsert_rows,
)

__all__ = ["Writes", "abandoned", "new_run", "new_steps", "reopened_run", "statements_for"]

Phase = Literal["triggering", "in flight", "terminal"]


class Writes(NamedTuple):
    """An event's statements, and whether the executor waits for their commit."""

    statements: tuple[Statement, ...]
    awaited: bool


def _awaited(*statements: Statement) -> Writes:
    return Writes(statements, True)


def _queued(*statements: Statement) -> Writes:
    return Writes(statements, False)


def statements_for(event: Event, run_id: int, *, new: bool = False) -> Writes:
    """What ``event`` of run ``run_id`` writes. ``new``: the run's row was written for
    this invocation, whose start (the executor's clock) it then takes."""
    match event:
        case AttemptTriggering(step=s, attempt=a):
            return _awaited(
                insert(
                    ATTEMPTS,
                    run_id=run_id,
                    step=s.name,
                    number=a.number,
                    phase="triggering",
                    state="triggering",
                    triggered_at=a.triggered_at,
                ),
                update(STEPS, (run_id, s.name), state=s.state, started_at=s.started_at, why=s.why),
            )
        case AttemptTriggered(step=s, attempt=a):
            return _awaited(_attempt(run_id, s.name, a, "in flight"))
        case ExecutionSeen(step=s, attempt=a):
            if a.state in TERMINAL_STATES:
                return _queued()  # the attempt's end follows at once, in one transaction
            return _queued(_attempt(run_id, s.name, a, "in flight"))
        case AttemptFinished(step=s, attempt=a):
            return _queued(_attempt(run_id, s.name, a, "terminal"))
        case RetryScheduled():
            return _awaited()  # what is queued is durable before a wait that may be long
        case StepFinished(step=s):
            return _queued(
                update(
                    STEPS,
                    (run_id, s.name),
                    state=s.state,
                    reason=s.reason,
                    started_at=s.started_at,
                    ended_at=s.ended_at,
                    ignored=s.ignored,
                    why=s.why,
                )
            )
        case RunFinished(run=run):
            return _awaited(
                *(
                    update(STEPS, (run_id, s.name), state=s.state, reason=s.reason)
                    for s in run.steps.values()
                    if s.state == "pending"
                ),
                update(
                    RUNS,
                    (run_id,),
                    state=run.state,
                    reason=run.reason,
                    ended_at=run.ended_at,
                    token_refreshes=run.token_refreshes,
                    auth_failed=run.auth_failed,
                    spans=run.spans,
                ),
            )
        case RunLate():
            return _queued(update(RUNS, (run_id,), late=True))
        case NotificationSent(record=n):
            return _queued(
                insert(
                    NOTIFICATIONS,
                    run_id=run_id,
                    kind=n.kind,
                    event=n.event,
                    target=n.target,
                    ok=n.ok,
                    error=n.error,
                    attempts=n.attempts,
                    at=n.at,
                )
            )
        case RunStarted(run=run) if new:
            # one start for the run: the one its events, metrics and report show
            return _queued(update(RUNS, (run_id,), started_at=run.started_at, spans=run.spans))
        case RunStarted(run=run):
            return _queued(update(RUNS, (run_id,), spans=run.spans))  # one invocation more
        case Forecasted(run=run, first=True) if new and run.forecast is not None:
            return _queued(update(RUNS, (run_id,), forecast=run.forecast.dump()))
        case Notice() | SignalReceived() | Forecasted():
            # the run and its steps were written before it started; notices and
            # signals change nothing (the run's end says how it ended)
            return _queued()
        case _:
            assert_never(event)


def _attempt(run_id: int, step: str, a: AttemptRecord, phase: Phase) -> Statement:
    return update(
        ATTEMPTS,
        (run_id, step, a.number),
        phase=phase,
        execution_id=a.execution_id,
        state=a.state,
        record=a.record,
        ended_at=a.ended_at,
    )


def new_run(
    run: RunRecord,
    *,
    plan_path: str,
    plan_sha256: str,
    options: Mapping[str, Any],
    started_at: float,
    pid: int,
    host: str,
) -> Statement:
    """The row of a new run, begun by process ``pid`` on ``host``."""
    return insert(
        RUNS,
        plan=run.plan,
        plan_path=plan_path,
        plan_sha256=plan_sha256,
        pid=pid,
        host=host,
        state="running",
        max_parallel=run.max_parallel,
        assumed_done=run.assumed_done,
        options=dict(options),
        started_at=started_at,
        auth=run.auth,
        api_url=run.api_url,
        deadline=run.deadline,
    )


def new_steps(run_id: int, run: RunRecord) -> tuple[Batch, ...]:
    """The rows of the steps of run ``run_id``, new."""
    return insert_rows(STEPS, ({**_step(run_id, s), **_plan_side(s)} for s in run.steps.values()))


def reopened_run(
    run_id: int, run: RunRecord, *, pid: int, host: str
) -> tuple[Statement, tuple[Batch, ...]]:
    """A resumed run: process ``pid`` on ``host`` now owns it; steps new to the plan are
    added, and every step takes the plan's run_if and on_failure."""
    owner = update(
        RUNS,
        (run_id,),
        pid=pid,
        host=host,
        state="running",
        ended_at=None,
        auth=run.auth,
        auth_failed=False,
        invocations=run.invocations,
        api_url=run.api_url,  # a run recorded before it was kept gets it now
    )
    return owner, upsert_rows(
        STEPS, ((_step(run_id, s), _plan_side(s)) for s in run.steps.values())
    )


def abandoned(run_id: int) -> Statement:
    """``--new-run`` over run ``run_id``: its executions are left to finish alone."""
    return update(RUNS, (run_id,), state="abandoned")


def _step(run_id: int, s: StepRecord) -> dict[str, Any]:
    return dict(run_id=run_id, name=s.name, workflow_id=s.workflow_id, stage=s.stage, state=s.state)


def _plan_side(s: StepRecord) -> dict[str, Any]:
    """What a resume takes from the plan for a step the journal has already."""
    return dict(run_if=s.run_if, on_failure=s.on_failure, upstreams=s.upstreams)
