"""``validate``, ``plan`` and ``graph``: the commands that read a plan and send nothing."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import click

from runbook.cli.shared import (
    forecast_options,
    format_option,
    load,
    plan_files,
    selection_options,
    stderr,
    stdout,
)
from runbook.errors import InputError

if TYPE_CHECKING:
    from runbook.forecast import Forecast
    from runbook.plan import Plan


@click.command()
@click.argument("plans", nargs=-1, required=True, metavar="PLAN...", shell_complete=plan_files)
def validate(plans: tuple[str, ...]) -> int:
    """Check plans without sending anything.

    Prints 'PLAN: ok (N workflows, M dependencies)' for each valid plan, and every
    problem of an invalid one as FILE:LINE:COLUMN: message. Exits 2 if any plan is
    invalid. A valid plan's warnings (FILE:LINE:COLUMN: warning: ...) keep exit 0.
    """
    from runbook.render import planview

    code = 0
    for path in plans:
        try:
            plan = load(path)
        except InputError as error:
            planview.write_invalid(stderr(), error)
            code = error.exit_code
        else:
            for warning in plan.warnings:
                stderr().write(f"{warning}\n")
            planview.write_valid(stdout(), plan)
    return code


@click.command()
@click.argument("plan_path", metavar="PLAN", shell_complete=plan_files)
@format_option("text", "json", help="Output format.")
@forecast_options
@selection_options
def plan(
    plan_path: str,
    fmt: str,
    with_forecast: bool,
    state_dir: str | None,
    selects: tuple[str, ...],
    excludes: tuple[str, ...],
) -> int:
    """Show the execution order: stages of steps that can run together.

    Each step is shown with its workflow id, upstreams and failure policy. With
    --forecast: how long a run will take (p50, p90), each step's expected start and end,
    and the critical path, from the journal's history. Nothing is sent.
    """
    from runbook.render.planview import PLAN_FORMATS

    loaded = load(plan_path)
    selection = loaded.dag.select(selects, excludes)
    predicted = _forecast(loaded, selection.steps, state_dir) if with_forecast else None
    stages = loaded.start_order(selection.steps).stages
    PLAN_FORMATS[fmt](stdout(), loaded, stages, selection, predicted)
    return 0


@click.command()
@click.argument("plan_path", metavar="PLAN", shell_complete=plan_files)
@format_option("dot", "mermaid", help="Graphviz DOT or a Mermaid flowchart.")
@forecast_options
def graph(plan_path: str, fmt: str, with_forecast: bool, state_dir: str | None) -> int:
    """Draw the dependency graph, edges from upstream to downstream; with --forecast,
    the critical path in red.

    \b
    runbook graph plan.yaml | dot -Tsvg > plan.svg
    runbook graph plan.yaml --format mermaid   # paste into Markdown
    """
    from runbook.render.graphview import GRAPH_FORMATS

    loaded = load(plan_path)
    predicted = _forecast(loaded, None, state_dir) if with_forecast else None
    GRAPH_FORMATS[fmt](stdout(), loaded, predicted)
    return 0


def _forecast(plan: Plan, steps: Iterable[str] | None, state_dir: str | None) -> Forecast:
    """The forecast of ``steps`` from the journal's history (none when the state dir
    has no journal yet: nothing is created to find that out)."""
    from runbook.forecast import forecast
    from runbook.journal import Store
    from runbook.journal import state_dir as resolve
    from runbook.journal.store import DB_NAME

    directory = resolve(state_dir)
    history: dict[int, list[float]] = {}
    if (directory / DB_NAME).exists():
        store = Store(directory)
        try:
            history = store.workflow_history(step.workflow_id for step in plan.steps.values())
        finally:
            store.close()
    return forecast(plan, history, steps=steps)


@click.command()
@click.argument("kind", type=click.Choice(["plan", "scenario"]), default="plan")
def schema(kind: str) -> int:
    """Print the JSON Schema of a plan (or of a sandbox scenario), for editors of
    plans kept outside runbook's repository:

    \b
      runbook schema > .plan.schema.json
    and, as the first line of each plan:
      # yaml-language-server: $schema=.plan.schema.json
    """
    from runbook.schemacheck import schema_text

    stdout().write(schema_text(kind))
    return 0
