"""The ``runbook`` command line: the click group, and ``main(argv)``, which parses,
dispatches to the command and returns its exit code.

Only this package imports click; each command or group of commands has a module of its
own, imported only when its command runs (or ``--help`` lists them all). Heavy modules
(YAML, jsonschema, networkx, httpx, rich) are imported inside the commands that need
them, so starting a command costs what that command uses.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

import click

from runbook import __version__
from runbook.cli.error_handler import error_handler

COMMANDS = {
    "validate": "plans",
    "plan": "plans",
    "graph": "plans",
    "schema": "plans",
    "apply": "apply",
    "check": "check",
    "status": "runs",
    "history": "runs",
    "timeline": "runs",
    "sandbox": "sandbox",
    "export": "export",
}
"""Each command's module in this package (the command is the module's attribute of the
same name)."""


class _Commands(click.Group):
    """The group whose commands are imported when they are looked up (click's lazily
    loaded subcommands)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMANDS.get(cmd_name)
        if module is None:
            return None
        command = getattr(importlib.import_module(f"runbook.cli.{module}"), cmd_name)
        assert isinstance(command, click.Command)
        return command


@click.group(
    cls=_Commands,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(
    __version__, "--version", "-V", prog_name="runbook", message="%(prog)s %(version)s"
)
@click.option(
    "--traceback",
    "show_traceback",
    is_flag=True,
    help="On an unexpected error, print the whole Python traceback.",
)
def cli(show_traceback: bool) -> None:
    """Run chains of Nexadata workflows from a plan kept in git.

    \b
    Exit codes: 0 success, 1 a step failed (other than under on_failure: ignore),
    2 invalid plan or usage, 3 authentication or API configuration,
    4 the plan is already being applied, 5 the run journal cannot be used,
    130 interrupted (resumable), 70 an unexpected error in runbook itself.
    """
    # --traceback is read by main(), whose error handler reports every error


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: run the command line and return its exit code."""
    from runbook.process import without_httpx_cli

    without_httpx_cli()  # before anything imports httpx
    args = list(sys.argv[1:] if argv is None else argv)
    with error_handler(show_traceback="--traceback" in args) as outcome:
        result = cli.main(args=args, prog_name="runbook", standalone_mode=False)
        outcome.exit_code = result if isinstance(result, int) else 0
    return outcome.exit_code
