"""Errors into messages and exit codes, in one place: the context manager ``main`` runs
every command under.

An expected error — click's usage errors, an abort, the tree of runbook/errors.py — is
its message on stderr and its exit code. Anything else is a bug, said plainly, with the
traceback when ``--traceback`` was given.
"""

from __future__ import annotations

import contextlib
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass

import click

from runbook.errors import InputError, RunbookError

EXIT_INTERNAL = 70
"""An unexpected error: a bug in runbook (sysexits' EX_SOFTWARE)."""

EXIT_INTERRUPTED = 130


@dataclass
class Outcome:
    """What ``main`` returns: the command's exit code, or the one its error maps to."""

    exit_code: int = 0


@contextlib.contextmanager
def error_handler(*, show_traceback: bool = False) -> Iterator[Outcome]:
    """Run the block; an exception it raises is told on stderr and becomes the
    ``exit_code`` of the outcome yielded (which the block sets when it ends well)."""
    outcome = Outcome()
    try:
        yield outcome
    except click.ClickException as exc:
        exc.show()
        outcome.exit_code = exc.exit_code
    except click.Abort:
        click.echo("runbook: interrupted", err=True)
        outcome.exit_code = EXIT_INTERRUPTED
    except InputError as exc:
        from runbook.render import planview

        planview.write_invalid(sys.stderr, exc)
        outcome.exit_code = exc.exit_code
    except RunbookError as exc:
        click.echo(f"runbook: {exc}", err=True)
        outcome.exit_code = exc.exit_code
    except Exception as exc:
        if show_traceback:
            traceback.print_exc()
        click.echo(
            f"runbook: unexpected error ({type(exc).__name__}); this is a bug in runbook. "
            "Run again with --traceback (runbook --traceback COMMAND ...) to see where.",
            err=True,
        )
        outcome.exit_code = EXIT_INTERNAL
