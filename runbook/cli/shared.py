"""What several commands share: their common options, shell completion of file and
directory names, and the output streams, looked up when written to."""

from __future__ import annotations

import sys
from typing import Any, TextIO

import click

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
        help="Leave out these steps (same SPEC forms as --select). Repeatable.",
    )(command)
    return click.option(
        "--select", "-s", "selects", multiple=True, metavar="SPEC", help=_SELECT_HELP
    )(command)


def files(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """Shell completion offers file names here (click asks the shell for them)."""
    from click.shell_completion import CompletionItem

    return [CompletionItem(incomplete, type="file")]


def dirs(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """Shell completion offers directory names here."""
    from click.shell_completion import CompletionItem

    return [CompletionItem(incomplete, type="dir")]


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
