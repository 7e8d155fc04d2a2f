"""What several commands share: their common options and the reading of a duration
flag, loading a plan, shell completion of file and directory names, and the output
streams, looked up when written to."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

import click

from runbook.errors import UsageError

if TYPE_CHECKING:
    from runbook.plan import Plan

_F = TypeVar("_F", bound=Callable[..., Any])

_SELECT_HELP = (
    "Only these steps: NAME, +NAME (and its upstreams), NAME+ (and its downstreams) "
    "or +NAME+. Repeatable."
)


def selection_options(command: Any) -> Any:
    """``--select`` and ``--exclude``, as ``selects`` and ``excludes``."""
    command = click.option(
        "--exclude",
        "-x",
        "excludes",
        multiple=True,
        metavar="SPEC",
        shell_complete=step_specs,
        help="Leave out these steps (same SPEC forms as --select). Repeatable.",
    )(command)
    return click.option(
        "--select",
        "-s",
        "selects",
        multiple=True,
        metavar="SPEC",
        shell_complete=step_specs,
        help=_SELECT_HELP,
    )(command)


def format_option(*choices: str, help: str | None = None) -> Callable[[_F], _F]:
    """``--format``, as ``fmt``: one of ``choices``, the first by default."""
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(list(choices)),
        default=choices[0],
        show_default=True,
        help=help,
    )


def duration(flag: str, text: str) -> float:
    """A duration flag's seconds (``2s``, ``1.5s``, ``1h``); a UsageError if unreadable."""
    from runbook.durations import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}") from None


def files(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """Shell completion offers file names here (click asks the shell for them)."""
    from click.shell_completion import CompletionItem

    return [CompletionItem(incomplete, type="file")]


def plan_files(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """Shell completion offers the YAML files (and the directories) that start so."""
    import os

    from click.shell_completion import CompletionItem

    folder, start = os.path.split(incomplete)
    try:
        entries = sorted(os.scandir(folder or "."), key=lambda e: e.name)
    except OSError:
        return []
    found = []
    for entry in entries:
        if not entry.name.startswith(start) or (entry.name.startswith(".") and not start):
            continue
        path = os.path.join(folder, entry.name)
        if entry.is_dir():
            found.append(CompletionItem(path + "/", type="plain"))
        elif entry.name.endswith((".yaml", ".yml")):
            found.append(CompletionItem(path))
    return found


def step_specs(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """Shell completion offers the plan's step names (the PLAN already typed), with the
    ``+`` the word starts with: ``-s +tr`` offers ``+transform``."""
    from click.shell_completion import CompletionItem

    # while the option's value is the word being completed, click leaves PLAN unparsed
    path = ctx.params.get("plan_path") or next(
        (arg for arg in ctx.args if not arg.startswith("-")), None
    )
    if not path:
        return []
    try:
        from runbook.plan import load_plan

        names = list(load_plan(path).steps)
    except Exception:  # an unreadable plan offers nothing: completion never complains
        return []
    plus = "+" if incomplete.startswith("+") else ""
    word = incomplete.removeprefix("+")
    return [CompletionItem(plus + name) for name in names if name.startswith(word)]


def run_ids(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """Shell completion offers the journal's latest run ids, each with its plan and
    state; the journal is only read (nothing is created or migrated)."""
    import sqlite3
    from contextlib import closing

    from click.shell_completion import CompletionItem

    from runbook.journal.location import state_dir
    from runbook.journal.store import DB_NAME

    journal = (state_dir(ctx.params.get("state_dir")) / DB_NAME).absolute()
    if not journal.is_file():
        return []
    try:
        with closing(sqlite3.connect(f"{journal.as_uri()}?mode=ro", uri=True)) as db:
            rows = db.execute("SELECT id, plan, state FROM runs ORDER BY id DESC LIMIT 30")
            return [
                CompletionItem(str(ident), help=f"{plan} {state}")
                for ident, plan, state in rows
                if str(ident).startswith(incomplete)
            ]
    except (sqlite3.Error, ValueError):  # completion never complains
        return []


def dirs(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """Shell completion offers directory names here."""
    from click.shell_completion import CompletionItem

    return [CompletionItem(incomplete, type="dir")]


def target_options(command: Any) -> Any:
    """``--api-url``, ``--token-file`` and ``--token-command``: where a run's requests go
    and where its token comes from (``apply``, and ``check``, which checks them)."""
    command = click.option(
        "--token-command",
        metavar="CMD",
        help="Get the token from this command's output, again whenever it must be "
        "refreshed (env NEXADATA_TOKEN_COMMAND).",
    )(command)
    command = click.option(
        "--token-file",
        metavar="PATH",
        shell_complete=files,
        help="Read the Bearer token from this file (again whenever the API refuses it) "
        "instead of the plan's api.oauth client or api.token_env.",
    )(command)
    return click.option(
        "--api-url",
        metavar="URL",
        help="The API's base URL (overrides NEXADATA_API_URL and the plan's api.base_url).",
    )(command)


def metrics_dir_option(help: str) -> Callable[[_F], _F]:
    """``--metrics-dir`` (env RUNBOOK_METRICS_DIR), as ``metrics_dir``."""
    return click.option(
        "--metrics-dir",
        metavar="DIR",
        envvar="RUNBOOK_METRICS_DIR",
        shell_complete=dirs,
        help=f"{help} (env RUNBOOK_METRICS_DIR).",
    )


state_dir_option = click.option(
    "--state-dir",
    metavar="DIR",
    shell_complete=dirs,
    envvar="RUNBOOK_STATE_DIR",
    help="Where the run journal lives (env RUNBOOK_STATE_DIR; default "
    "$XDG_STATE_HOME/runbook, i.e. ~/.local/state/runbook).",
)


def forecast_options(command: Any) -> Any:
    """``--forecast`` (as ``with_forecast``) and the ``--state-dir`` whose journal it reads."""
    command = state_dir_option(command)
    return click.option(
        "--forecast",
        "with_forecast",
        is_flag=True,
        help="Forecast the run from the journal's history: p50, p90, the critical path.",
    )(command)


def stdout() -> TextIO:
    """The stream of the moment (a test or a pager may have replaced it since import)."""
    return sys.stdout


def stderr() -> TextIO:
    """The error stream of the moment."""
    return sys.stderr


def load(path: str) -> Plan:
    """The plan at ``path``, loaded as every command loads it: with the cycle collector
    paused (runbook.process), which a plan's many small acyclic objects only slow down."""
    from runbook.plan import load_plan
    from runbook.process import collector_paused

    with collector_paused():
        return load_plan(path)
