"""What ``validate`` and ``plan`` print: plain text and JSON (``graph``: :mod:`graphview`)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from runbook import conditions
from runbook.durations import format_duration
from runbook.text import plural, printable

if TYPE_CHECKING:
    from runbook.errors import InputError
    from runbook.forecast import Forecast
    from runbook.graph import Selection
    from runbook.plan import Plan, Step

__all__ = [
    "write_invalid",
    "write_plan_json",
    "write_plan_text",
    "write_valid",
]


def write_valid(out: TextIO, plan: Plan) -> None:
    """``PLAN: ok (N workflows, M dependencies)``"""
    counts = f"{plural(len(plan.steps), 'workflow')}, {plural(plan.edge_count, 'dependency')}"
    out.write(f"{printable(plan.path)}: ok ({counts})\n")


def write_invalid(out: TextIO, error: InputError) -> None:
    """Every problem as ``FILE:LINE:COLUMN: message``, then one summary line."""
    for problem in error.problems:
        out.write(f"{problem}\n")
    name = printable(error.problems[0].file) if error.problems else error.kind
    out.write(f"{name}: invalid {error.kind} ({plural(len(error.problems), 'problem')})\n")


_HEADERS = (
    "STAGE",
    "STEP",
    "WORKFLOW",
    "RUN_IF",
    "ON_FAILURE",
    "RETRIES",
    "TIMEOUT",
    "DEPENDS_ON",
)
_RIGHT = (0, 2, 5)  # the numbers
FINALLY_UPSTREAMS = "every other step (finally)"


def _depends_on(plan: Plan, name: str) -> str:
    written = ", ".join(plan.steps[name].depends_on)
    if name not in plan.finally_steps:
        return written or "-"
    return f"{written}, {FINALLY_UPSTREAMS}" if written else FINALLY_UPSTREAMS


def write_plan_text(
    out: TextIO,
    plan: Plan,
    stages: Sequence[Sequence[str]],
    selection: Selection,
    forecast: Forecast | None = None,
) -> None:
    """The stages as one aligned table, a row per step, after a one-line summary."""
    selected = f"{len(selection.steps)} of {len(plan.steps)}"
    count = (
        plural(len(plan.steps), "workflow")
        if len(selection.steps) == len(plan.steps)
        else f"{selected} workflows selected"
    )
    out.write(
        f"Plan {plan.name}: {count} in {plural(len(stages), 'stage')}, "
        f"max_parallel {plan.max_parallel}\n"
    )
    if selection.assumed_done:
        names = ", ".join(sorted(selection.assumed_done))
        out.write(f"Taken as already done (not selected): {names}\n")
    rows = [_HEADERS]
    for number, stage in enumerate(stages, start=1):
        for name in stage:
            step = plan.steps[name]
            rows.append(
                (
                    str(number),
                    name,
                    str(step.workflow_id),
                    str(step.run_if),
                    step.on_failure,
                    str(step.retries),
                    format_duration(step.timeout),
                    _depends_on(plan, name),
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(_HEADERS) - 1)]
    out.write("\n")
    for row in rows:
        cells = [
            cell.rjust(width) if index in _RIGHT else cell.ljust(width)
            for index, (cell, width) in enumerate(zip(row, widths, strict=False))
        ]
        out.write("  ".join(cells) + "  " + row[-1] + "\n")
    if forecast is not None:
        _forecast_text(out, forecast)


def _forecast_text(out: TextIO, forecast: Forecast) -> None:
    out.write("\n")
    if not forecast.has_history:
        out.write(
            "Forecast: no history yet in the journal, and no estimate in the plan: "
            "after a run, the forecast uses its times\n"
        )
        return
    path = " -> ".join(forecast.critical_path)
    out.write(
        f"Forecast: p50 {format_duration(forecast.p50)}, p90 {format_duration(forecast.p90)} "
        f"({forecast.samples} simulated runs); critical path: {path}\n"
    )
    if forecast.without_history:
        names = ", ".join(forecast.without_history)
        out.write(f"Without history or estimate (counted as 0s): {names}\n")
    rows = [("", "STEP", "START", "END", "P50", "P90", "FROM")]
    for step in forecast.steps.values():
        source = {
            "history": plural(step.history, "execution"),
            "estimate": "estimate",
            "none": "-",
        }[step.source]
        rows.append(
            (
                "*" if step.critical else "",
                step.name,
                format_duration(step.start) if step.start is not None else "-",
                format_duration(step.end) if step.end is not None else "-",
                format_duration(step.p50),
                format_duration(step.p90),
                source,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    out.write("\n")
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        out.write("  ".join(cells) + "  " + row[-1] + "\n")
    out.write("(* on the critical path; START and END in the p50 schedule)\n")
    ends = [step.end for step in forecast.steps.values() if step.end is not None]
    if ends and abs(max(ends) - forecast.p50) >= max(0.05 * forecast.p50, 0.5):
        out.write(
            f"(the schedule, each step at its own p50, ends at {format_duration(max(ends))}; "
            f"the run's p50, {format_duration(forecast.p50)}, is the middle of whole simulated "
            "runs, in which parallel steps that vary make the run wait for the slowest)\n"
        )


def _forecast_json(forecast: Forecast) -> dict[str, Any]:
    return {
        "p50_s": forecast.p50,
        "p90_s": forecast.p90,
        "samples": forecast.samples,
        "critical_path": list(forecast.critical_path),
        "without_history": list(forecast.without_history),
    }


def _step_json(plan: Plan, step: Step) -> dict[str, Any]:
    return {
        "name": step.name,
        "workflow_id": step.workflow_id,
        "depends_on": list(step.depends_on),
        "description": step.description,
        "run_if": conditions.written(step.run_if),
        "finally": step.name in plan.finally_steps,
        "on_failure": step.on_failure,
        "retries": step.retries,
        "retry_delay": step.retry_delay,
        "timeout": step.timeout,
        "poll_interval": step.poll_interval,
        "max_poll_interval": step.max_poll_interval,
    }


def write_plan_json(
    out: TextIO,
    plan: Plan,
    stages: Sequence[Sequence[str]],
    selection: Selection,
    forecast: Forecast | None = None,
) -> None:
    """The plan resolved, as JSON: durations in seconds, stages in order; with a
    forecast, its figures on the plan and on each step."""
    staged = [[_step_json(plan, plan.steps[name]) for name in stage] for stage in stages]
    document: dict[str, Any] = {
        "plan": plan.name,
        "path": printable(plan.path),
        "description": plan.description,
        "max_parallel": plan.max_parallel,
        "api": {"base_url": plan.api.base_url, "token_env": plan.api.token_env},
        "workflows": len(plan.steps),
        "dependencies": plan.edge_count,
        "selected": len(selection.steps),
        "assumed_done": sorted(selection.assumed_done),
        "finally": list(plan.finally_steps),
        "stages": staged,
    }
    if forecast is not None:
        document["forecast"] = _forecast_json(forecast)
        for stage in staged:
            for entry in stage:
                step = forecast.steps[entry["name"]]
                entry.update(
                    expected_start_s=step.start,
                    expected_end_s=step.end,
                    p50_s=step.p50,
                    p90_s=step.p90,
                    history=step.history,
                    critical=step.critical,
                )
    json.dump(document, out, indent=2)
    out.write("\n")


PlanWriter = Callable[
    [TextIO, "Plan", Sequence[Sequence[str]], "Selection", "Forecast | None"], None
]
PLAN_FORMATS: Mapping[str, PlanWriter] = {"text": write_plan_text, "json": write_plan_json}
"""``runbook plan --format``: each format's writer."""
