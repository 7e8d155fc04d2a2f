"""The run as planned, before anything is sent: the selected steps in their start
order, the scheduler core's rules, the run's record, and what a resume takes over —
everything the executor is handed, built once and checked on its own."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from runbook.events import RunRecord, StepRecord
from runbook.plan import Plan, StartOrder
from runbook.run.resume import Resumed, take_over
from runbook.schedule import Rule

__all__ = ["PlannedRun", "planned"]


@dataclass(frozen=True, slots=True)
class PlannedRun:
    """What the executor runs. ``run`` is the record the run fills in (a resume's
    carried-over attempts already in it)."""

    plan: Plan
    order: StartOrder
    rules: tuple[Rule, ...]
    run: RunRecord
    resumed: Resumed
    deadline_from: float | None
    """When the run's first invocation started (epoch seconds), which the plan's
    ``deadline`` counts from; None: this invocation's start."""


def planned(
    plan: Plan,
    *,
    steps: Iterable[str] | None = None,
    assumed_done: Iterable[str] = (),
    max_parallel: int | None = None,
    prior: RunRecord | None = None,
    retrigger_unknown: bool = False,
) -> PlannedRun:
    """The run of ``steps`` (default: all) of ``plan``; other upstreams count as done
    (``assumed_done`` names them for the record). With ``prior``, the run it resumes."""
    order = plan.start_order(None if steps is None else set(steps))
    run = RunRecord(
        plan=plan.name,
        run_id=prior.run_id if prior is not None else None,
        max_parallel=max_parallel or plan.max_parallel,
        steps={
            name: StepRecord(
                name,
                plan.steps[name].workflow_id,
                order.stage[name] + 1,
                run_if=plan.steps[name].run_if,
                on_failure=plan.steps[name].on_failure,
                upstreams=tuple(plan.upstreams(name, order.stage)),
            )
            for name in order
        },
        assumed_done=tuple(sorted(assumed_done)),
        deadline=plan.deadline,
    )
    resumed = Resumed()
    if prior is not None:
        run.invocations = prior.invocations + 1
        run.first_started = prior.started_at
        run.spans = list(prior.spans) or [(prior.started_at, prior.ended_at)]
        run.forecast = prior.forecast
        resumed = take_over(
            prior,
            run.steps,
            upstreams=lambda name: plan.upstreams(name, order.stage),
            order=order,
            retrigger_unknown=retrigger_unknown,
        )
        for name, old in resumed.carried.items():
            record = run.steps[name]
            record.attempts = list(old.attempts)
            record.started_at, record.ended_at = old.started_at, old.ended_at
        for name in resumed.kept:
            run.steps[name].state, run.steps[name].reason = "succeeded", None
    return PlannedRun(
        plan,
        order,
        plan.rules(order),
        run,
        resumed,
        deadline_from=prior.started_at if prior is not None else None,
    )
