"""``export``: a plan handed over to another scheduler; ``export airflow`` writes it as an
Airflow DAG file whose header says how to export it again."""

from __future__ import annotations

import click
from click.core import ParameterSource

from runbook.cli.shared import files, load, plan_files, selection_options, stderr, stdout
from runbook.errors import UsageError
from runbook.text import printable, shell_word


@click.group()
def export() -> None:
    """Hand a plan over to another scheduler."""


@export.command("airflow")
@click.argument("plan_path", metavar="PLAN", shell_complete=plan_files)
@click.option(
    "--output",
    "-o",
    "output",
    metavar="FILE",
    shell_complete=files,
    help="Write the DAG file here (atomically) instead of to stdout.",
)
@click.option(
    "--schedule",
    metavar="CRON",
    help="The DAG's schedule: a cron expression ('0 3 * * *') or a preset (@daily). "
    "Default: none (runs are triggered by hand or by the API).",
)
@selection_options
@click.pass_context
def export_airflow(
    ctx: click.Context,
    plan_path: str,
    output: str | None,
    schedule: str | None,
    selects: tuple[str, ...],
    excludes: tuple[str, ...],
) -> int:
    """Write an Apache Airflow 3 DAG file equivalent to the plan.

    One task per selected step, running runbook.airflow's operator (install
    runbook with its airflow extra where Airflow runs), plus a last task that fails the DAG
    run exactly when apply would exit 1. The token comes from an Airflow connection
    (default nexadata_default, or the plan's airflow.conn_id): the file holds no secret.
    The plan stays the source of truth: export again when it changes. Nothing is sent.
    """
    from runbook.airflow import dagfile
    from runbook.files import write_atomically

    cron = dagfile.check_schedule(schedule) if schedule is not None else None
    loaded = load(plan_path)
    selection = loaded.dag.select(selects, excludes)
    # the header's command line: what decides the file, then where it goes
    command = command_line(ctx, schedule=cron, output=None)
    if output:
        command += ["-o", shell_word(output)]
    text = dagfile.render(
        loaded,
        selection.steps,
        schedule=cron,
        conn_id=loaded.airflow_conn_id,
        command=command,
    )
    for setting in dagfile.not_exported(loaded):
        stderr().write(f"runbook: note: not exported: {setting}\n")
    if output is None:
        stdout().write(text)
        return 0
    try:
        write_atomically(output, text)
    except OSError as exc:
        raise UsageError(f"cannot write {printable(output)}: {exc.strerror or exc}") from None
    stderr().write(
        f"runbook: wrote DAG {dagfile.dag_id(loaded)!r} ({len(selection.steps)} steps) "
        f"to {printable(output)}\n"
    )
    return 0


def command_line(ctx: click.Context, **given: object) -> list[str]:
    """The command line that runs ``ctx``'s command again, spelled from what click
    parsed rather than option by option: the command's path, then each parameter not left
    at its default, in the order the command declares them (its ``--help`` order). An
    argument is its value, an option ``--name=value`` (once for each value of a repeatable
    one), a flag that is on ``--name``; values are quoted for a shell where they need it.
    ``given`` replaces parsed values by parameter name: the checked form of a value, or
    ``None`` to leave a parameter out."""
    words = [ctx.command_path]
    for param in ctx.command.params:
        name = param.name
        if name is None:
            continue
        if name in given:
            value = given[name]
        elif ctx.get_parameter_source(name) is ParameterSource.DEFAULT:
            continue
        else:
            value = ctx.params[name]
        values = [v for v in (value if isinstance(value, tuple) else (value,)) if v is not None]
        if not isinstance(param, click.Option):
            words += [shell_word(str(v)) for v in values]
        elif param.is_flag:
            words += [max(param.opts, key=len)] if value else []
        else:
            words += [f"{max(param.opts, key=len)}={shell_word(str(v))}" for v in values]
    return words
