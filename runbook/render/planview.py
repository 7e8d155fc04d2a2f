"""What ``validate``, ``plan`` and ``graph`` print: plain text, JSON, DOT and Mermaid."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from runbook.durations import format_duration
from runbook.text import plural, printable

if TYPE_CHECKING:
    from runbook.errors import InputError
    from runbook.forecast import Forecast
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
                    step.run_if,
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
        "run_if": step.run_if,
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


def _dot_id(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _edges(plan: Plan) -> list[tuple[str, str, str | None]]:
    """Every edge to draw, upstream first, with its label: the ``run_if`` of a
    ``failure``/``always`` step it leads into, ``finally`` for the implicit edges of a
    ``finally`` step (drawn from the last steps before it only: the others reach it
    through them)."""
    edges: list[tuple[str, str, str | None]] = []
    last = set(plan.finally_steps)
    ends = [
        name
        for name in sorted(plan.steps)
        if name not in last and not any(down not in last for down in plan.dag.successors(name))
    ]
    for name in sorted(plan.steps):
        step = plan.steps[name]
        label = step.run_if if step.run_if != "success" else None
        for upstream in sorted(step.depends_on):
            edges.append((upstream, name, label))
        if name in last:
            implicit = f"finally, {step.run_if}" if label else "finally"
            into = [end for end in ends if end not in step.depends_on]
            # one label says it: the same label on each edge would overlap at the step
            edges += [(end, name, implicit if i == 0 else "") for i, end in enumerate(into)]
    return edges


def _legend(plan: Plan, forecast: Forecast | None) -> list[str]:
    """What the drawing's styles mean, for those it uses."""
    lines = []
    if any(label is not None for _, _, label in _edges(plan)):
        lines.append("dashed arrow: into a clean-up step, labelled with its run_if")
    for policy, look in (("continue", "dashed"), ("ignore", "dotted")):
        if any(step.on_failure == policy for step in plan.steps.values()):
            lines.append(f"{look} box: on_failure {policy}")
    if forecast is not None and forecast.critical_path:
        lines.append("red: the critical path (dotted: a wait for a free slot)")
    return lines


def _critical_edges(forecast: Forecast | None) -> set[tuple[str, str]]:
    path = forecast.critical_path if forecast is not None else ()
    return set(itertools.pairwise(path))


def write_dot(out: TextIO, plan: Plan, forecast: Forecast | None = None) -> None:
    """A Graphviz digraph, left to right; ``on_failure: continue`` steps are dashed,
    ``ignore`` steps dotted; edges into ``failure``/``always`` steps and the implicit
    edges of ``finally`` steps are dashed and labelled; with a forecast, the critical
    path in bold red (a hop through a slot wait, between steps with no edge, dotted)."""
    critical = _critical_edges(forecast)
    on_path = set(forecast.critical_path) if forecast is not None else set()
    out.write(f"digraph {_dot_id(plan.name)} {{\n")
    out.write("  rankdir=LR;\n  node [shape=box, fontname=Helvetica];\n")
    for name in sorted(plan.steps):
        step = plan.steps[name]
        style = _NODE_STYLES.get(step.on_failure, "")
        label = _dot_id(f"{name}\nworkflow {step.workflow_id}").replace("\n", "\\n")
        if name in on_path:
            style += ", color=red, penwidth=2"
        out.write(f"  {_dot_id(name)} [label={label}{style}];\n")
    drawn = set()
    for upstream, name, edge_label in _edges(plan):
        options = []
        if edge_label is not None:
            options.append(
                f"style=dashed, label={_dot_id(edge_label)}" if edge_label else "style=dashed"
            )
        if (upstream, name) in critical:
            options.append("color=red, penwidth=2")
            drawn.add((upstream, name))
        attributes = f" [{', '.join(options)}]" if options else ""
        out.write(f"  {_dot_id(upstream)} -> {_dot_id(name)}{attributes};\n")
    for upstream, name in sorted(critical - drawn):  # a slot freed, no dependency
        out.write(
            f"  {_dot_id(upstream)} -> {_dot_id(name)} "
            '[style=dotted, color=red, penwidth=2, label="slot"];\n'
        )
    legend = _legend(plan, forecast)
    if legend:
        text = _dot_id("\n".join(legend)).replace("\n", "\\l")[:-1] + '\\l"'
        out.write('  subgraph cluster_legend {\n    label="legend"; style=dashed; color=gray;\n')
        out.write(f"    runbook_legend [shape=plaintext, label={text}];\n  }}\n")
    out.write("}\n")


_NODE_STYLES = {"continue": ", style=dashed", "ignore": ", style=dotted"}

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


def write_mermaid(out: TextIO, plan: Plan, forecast: Forecast | None = None) -> None:
    """A Mermaid flowchart, left to right; ``on_failure: continue`` steps are dashed,
    ``ignore`` steps dotted; edges into ``failure``/``always`` steps and the implicit
    edges of ``finally`` steps are dashed and labelled; with a forecast, the critical
    path's steps in class ``critical`` and its edges in a ``linkStyle``."""
    critical = _critical_edges(forecast)
    names = sorted(plan.steps)
    ids = _mermaid_ids(names)
    out.write("flowchart LR\n")
    for name in names:
        out.write(f'  {ids[name]}["{name}<br/>workflow {plan.steps[name].workflow_id}"]\n')
    links: list[int] = []
    edges = _edges(plan)
    for number, (upstream, name, label) in enumerate(edges):
        arrow = f" -.->|{label}| " if label else " -.-> " if label is not None else " --> "
        out.write(f"  {ids[upstream]}{arrow}{ids[name]}\n")
        if (upstream, name) in critical:
            links.append(number)
    slots = sorted(critical - {(u, n) for u, n, _ in edges})  # a slot freed, no dependency
    for extra, (upstream, name) in enumerate(slots):
        links.append(len(edges) + extra)
        out.write(f"  {ids[upstream]} -.->|slot| {ids[name]}\n")
    for policy, dashes in (("continue", "5 5"), ("ignore", "2 2")):
        styled = [ids[name] for name in names if plan.steps[name].on_failure == policy]
        if styled:
            out.write(f"  classDef {policy} stroke-dasharray: {dashes}\n")
            out.write(f"  class {','.join(styled)} {policy}\n")
    if forecast is not None and forecast.critical_path:
        out.write("  classDef critical stroke:#d00,stroke-width:3px\n")
        out.write(f"  class {','.join(ids[n] for n in forecast.critical_path)} critical\n")
        if links:
            out.write(f"  linkStyle {','.join(map(str, links))} stroke:#d00,stroke-width:3px\n")
    legend = _legend(plan, forecast)
    if legend:
        ident = "runbook_legend"
        while ident in ids.values():
            ident += "_"
        out.write(f"  subgraph {ident}_box [legend]\n")
        out.write(f'    {ident}["{"<br/>".join(legend)}"]\n  end\n')


PlanWriter = Callable[
    [TextIO, "Plan", Sequence[Sequence[str]], "Selection", "Forecast | None"], None
]
GraphWriter = Callable[[TextIO, "Plan", "Forecast | None"], None]

PLAN_FORMATS: Mapping[str, PlanWriter] = {"text": write_plan_text, "json": write_plan_json}
"""``runbook plan --format``: each format's writer."""
GRAPH_FORMATS: Mapping[str, GraphWriter] = {"dot": write_dot, "mermaid": write_mermaid}
"""``runbook graph --format``: each format's writer."""
