"""What ``validate``, ``plan`` and ``graph`` print: plain text, JSON, DOT and Mermaid."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

from runbook.durations import format_duration
from runbook.text import plural

if TYPE_CHECKING:
    from runbook.errors import InputError
    from runbook.graph import Selection
    from runbook.plan import Plan, Step

__all__ = [
    "write_dot",
    "write_invalid",
    "write_mermaid",
    "write_plan_json",
    "write_plan_text",
    "write_valid",
]


def write_valid(out: TextIO, plan: Plan) -> None:
    """``PLAN: ok (N workflows, M dependencies)``"""
    counts = f"{plural(len(plan.steps), 'workflow')}, {plural(plan.edge_count, 'dependency')}"
    out.write(f"{plan.path}: ok ({counts})\n")


def write_invalid(out: TextIO, error: InputError) -> None:
    """Every problem as ``FILE:LINE:COLUMN: message``, then one summary line."""
    for problem in error.problems:
        out.write(f"{problem}\n")
    name = error.problems[0].file if error.problems else error.kind
    out.write(f"{name}: invalid {error.kind} ({plural(len(error.problems), 'problem')})\n")


_HEADERS = ("STAGE", "STEP", "WORKFLOW", "ON_FAILURE", "RETRIES", "TIMEOUT", "DEPENDS_ON")


def write_plan_text(
    out: TextIO, plan: Plan, stages: Sequence[Sequence[str]], selection: Selection
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
                    step.on_failure,
                    str(step.retries),
                    format_duration(step.timeout),
                    ", ".join(step.depends_on) or "-",
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(_HEADERS) - 1)]
    out.write("\n")
    for row in rows:
        cells = [
            cell.rjust(width) if index in (0, 2, 4) else cell.ljust(width)
            for index, (cell, width) in enumerate(zip(row, widths, strict=False))
        ]
        out.write("  ".join(cells) + "  " + row[-1] + "\n")


def _step_json(step: Step) -> dict[str, Any]:
    return {
        "name": step.name,
        "workflow_id": step.workflow_id,
        "depends_on": list(step.depends_on),
        "description": step.description,
        "on_failure": step.on_failure,
        "retries": step.retries,
        "retry_delay": step.retry_delay,
        "timeout": step.timeout,
        "poll_interval": step.poll_interval,
        "max_poll_interval": step.max_poll_interval,
    }


def write_plan_json(
    out: TextIO, plan: Plan, stages: Sequence[Sequence[str]], selection: Selection
) -> None:
    """The plan resolved, as JSON: durations in seconds, stages in order."""
    document = {
        "plan": plan.name,
        "path": plan.path,
        "description": plan.description,
        "max_parallel": plan.max_parallel,
        "api": {"base_url": plan.api.base_url, "token_env": plan.api.token_env},
        "workflows": len(plan.steps),
        "dependencies": plan.edge_count,
        "selected": len(selection.steps),
        "assumed_done": sorted(selection.assumed_done),
        "stages": [[_step_json(plan.steps[name]) for name in stage] for stage in stages],
    }
    json.dump(document, out, indent=2)
    out.write("\n")


def _dot_id(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_dot(out: TextIO, plan: Plan) -> None:
    """A Graphviz digraph, left to right; ``on_failure: continue`` steps are dashed."""
    out.write(f"digraph {_dot_id(plan.name)} {{\n")
    out.write("  rankdir=LR;\n  node [shape=box, fontname=Helvetica];\n")
    for name in sorted(plan.steps):
        step = plan.steps[name]
        style = ", style=dashed" if step.on_failure == "continue" else ""
        label = _dot_id(f"{name}\nworkflow {step.workflow_id}").replace("\n", "\\n")
        out.write(f"  {_dot_id(name)} [label={label}{style}];\n")
    for name in sorted(plan.steps):
        for upstream in sorted(plan.steps[name].depends_on):
            out.write(f"  {_dot_id(upstream)} -> {_dot_id(name)};\n")
    out.write("}\n")


_MERMAID_RESERVED = {
    "end",
    "graph",
    "subgraph",
    "flowchart",
    "style",
    "class",
    "classdef",
    "click",
    "linkstyle",
    "direction",
    "call",
    "href",
}


def _mermaid_ids(names: Sequence[str]) -> dict[str, str]:
    ids: dict[str, str] = {}
    used: set[str] = set()
    for name in names:
        ident = re.sub(r"[^A-Za-z0-9_]", "_", name)
        if ident.lower() in _MERMAID_RESERVED:
            ident += "_"
        base, n = ident, 2
        while ident in used:
            ident, n = f"{base}_{n}", n + 1
        used.add(ident)
        ids[name] = ident
    return ids


def write_mermaid(out: TextIO, plan: Plan) -> None:
    """A Mermaid flowchart, left to right; ``on_failure: continue`` steps are dashed."""
    names = sorted(plan.steps)
    ids = _mermaid_ids(names)
    out.write("flowchart LR\n")
    for name in names:
        out.write(f'  {ids[name]}["{name}<br/>workflow {plan.steps[name].workflow_id}"]\n')
    for name in names:
        for upstream in sorted(plan.steps[name].depends_on):
            out.write(f"  {ids[upstream]} --> {ids[name]}\n")
    continued = [ids[name] for name in names if plan.steps[name].on_failure == "continue"]
    if continued:
        out.write("  classDef continue stroke-dasharray: 5 5\n")
        out.write(f"  class {','.join(continued)} continue\n")
