"""What ``graph`` draws: the plan as DOT or as a Mermaid flowchart, with the ``run_if``
of each clean-up step on its edges and, with a forecast, the critical path."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, TextIO

from runbook.conditions import Condition

if TYPE_CHECKING:
    from runbook.forecast import Forecast
    from runbook.plan import Plan

__all__ = ["GRAPH_FORMATS", "write_dot", "write_mermaid"]


def _dot_id(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _edges(plan: Plan) -> list[tuple[str, str, str | None]]:
    """Every edge to draw, upstream first, with its label: the ``run_if`` of a
    ``failure``/``always`` step it leads into, the outcomes a mapping ``run_if`` needs
    of the upstream it comes from (``failed|skipped``), ``finally`` for the implicit
    edges of a ``finally`` step (drawn from the last steps before it only: the others
    reach it through them; a named one is drawn with its outcomes)."""
    edges: list[tuple[str, str, str | None]] = []
    last = set(plan.finally_steps)
    ends = [
        name
        for name in sorted(plan.steps)
        if name not in last and not any(down not in last for down in plan.dag.successors(name))
    ]
    for name in sorted(plan.steps):
        step = plan.steps[name]
        run_if, named = step.run_if, {}
        if isinstance(run_if, Condition):
            named = {up: "|".join(accepted) for up, accepted in run_if.entries}
        label = run_if if isinstance(run_if, str) and run_if != "success" else None
        for upstream in sorted(step.depends_on):
            edges.append((upstream, name, named.get(upstream, label)))
        if name in last:
            implicit = f"finally, {run_if}" if label else "finally"
            into = [end for end in ends if end not in step.depends_on and end not in named]
            # one label says it: the same label on each edge would overlap at the step
            edges += [(end, name, implicit if i == 0 else "") for i, end in enumerate(into)]
            edges += [(up, name, named[up]) for up in sorted(named) if up not in step.depends_on]
    return edges


def _legend(plan: Plan, forecast: Forecast | None) -> list[str]:
    """What the drawing's styles mean, for those it uses."""
    lines = []
    if any(label is not None for _, _, label in _edges(plan)):
        lines.append("dashed arrow: into a clean-up step, labelled with its run_if")
    if any(isinstance(step.run_if, Condition) for step in plan.steps.values()):
        lines.append("arrow labelled with outcomes: from an upstream a run_if mapping names")
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
    ``ignore`` steps dotted; edges into ``failure``/``always`` steps, from an upstream
    a mapping ``run_if`` names, and the implicit edges of ``finally`` steps are dashed
    and labelled (``"failed|skipped"`` in quotes: it holds Mermaid's delimiter); with a
    forecast, the critical path's steps in class ``critical`` and its edges in a
    ``linkStyle``."""
    critical = _critical_edges(forecast)
    names = sorted(plan.steps)
    ids = _mermaid_ids(names)
    out.write("flowchart LR\n")
    for name in names:
        out.write(f'  {ids[name]}["{name}<br/>workflow {plan.steps[name].workflow_id}"]\n')
    links: list[int] = []
    edges = _edges(plan)
    for number, (upstream, name, label) in enumerate(edges):
        shown = f'"{label}"' if label and "|" in label else label
        arrow = f" -.->|{shown}| " if label else " -.-> " if label is not None else " --> "
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


GraphWriter = Callable[[TextIO, "Plan", "Forecast | None"], None]

GRAPH_FORMATS: Mapping[str, GraphWriter] = {"dot": write_dot, "mermaid": write_mermaid}
"""``runbook graph --format``: each format's writer."""
