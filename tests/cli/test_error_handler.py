"""The one place where errors become messages and exit codes: every class of the tree,
click's own errors, a bug (with and without ``--traceback``), and ``main`` running every
command under it."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from runbook import errors
from runbook.cli.error_handler import error_handler
from runbook.errors import InputError, Problem, RunbookError

# docs/cli.md's table of exit codes, class by class
EXIT_CODES = {
    errors.UsageError: 2,
    errors.InputError: 2,
    errors.PlanError: 2,
    errors.ScenarioError: 2,
    errors.ConfigError: 3,
    errors.AuthError: 3,
    errors.CredentialCacheError: 5,
    errors.TlsError: 3,
    errors.ProxyError: 3,
    errors.ApiUnreachable: 3,
    errors.ApiError: 1,
    errors.WorkflowNotFound: 1,
    errors.ExecutionNotFound: 1,
    errors.TriggerRefused: 1,
    errors.TriggerOutcomeUnknown: 1,
    errors.ApiUnavailable: 1,
    errors.LockedError: 4,
    errors.JournalError: 5,
}

BUG = (
    "runbook: unexpected error (RuntimeError); this is a bug in runbook. "
    "Run again with --traceback (runbook --traceback COMMAND ...) to see where.\n"
)


def subclasses(cls: type[RunbookError]) -> set[type[RunbookError]]:
    found = set(cls.__subclasses__())
    return found.union(*(subclasses(sub) for sub in found))


def test_every_class_of_the_tree_has_its_exit_code_here() -> None:
    assert subclasses(RunbookError) == set(EXIT_CODES)


@pytest.mark.parametrize("cls", sorted(EXIT_CODES, key=lambda c: c.__name__))
def test_each_error_is_its_message_and_its_exit_code(
    cls: type[RunbookError], capsys: pytest.CaptureFixture[str]
) -> None:
    if issubclass(cls, InputError):
        error: RunbookError = cls(
            [Problem("p.yaml", 2, 7, "no such key"), Problem("p.yaml", 1, 1, "x")]
        )
        told = f"p.yaml:1:1: x\np.yaml:2:7: no such key\np.yaml: invalid {cls.kind} (2 problems)\n"
    else:
        error = cls("what happened, and where")
        told = "runbook: what happened, and where\n"
    with error_handler() as outcome:
        raise error
    assert outcome.exit_code == EXIT_CODES[cls]
    assert capsys.readouterr() == ("", told)


def test_the_block_sets_the_exit_code_when_nothing_is_raised() -> None:
    with error_handler() as outcome:
        outcome.exit_code = 1
    assert outcome.exit_code == 1
    with error_handler() as untouched:
        pass
    assert untouched.exit_code == 0


def test_clicks_usage_errors_and_an_abort(capsys: pytest.CaptureFixture[str]) -> None:
    with error_handler() as outcome:
        raise click.UsageError("No such option: --nope")
    assert outcome.exit_code == 2
    assert capsys.readouterr().err == "Error: No such option: --nope\n"
    with error_handler() as outcome:
        raise click.Abort
    assert outcome.exit_code == 130
    assert capsys.readouterr().err == "runbook: interrupted\n"


@pytest.mark.parametrize("show_traceback", [False, True])
def test_anything_else_is_a_bug_with_its_traceback_on_request(
    show_traceback: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    def deep() -> None:
        raise RuntimeError("the bug's own words")

    with error_handler(show_traceback=show_traceback) as outcome:
        deep()
    assert outcome.exit_code == 70
    err = capsys.readouterr().err
    assert err.endswith(BUG)
    if show_traceback:
        assert err.startswith("Traceback (most recent call last):\n")
        assert "in deep\n" in err and "RuntimeError: the bug's own words\n" in err
    else:
        assert err == BUG


def test_main_runs_every_command_under_the_handler(
    cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def broken(path: str) -> None:
        raise RuntimeError("inside load_plan")

    monkeypatch.setattr("runbook.plan.load_plan", broken)
    quiet = cli("validate", "plan.yaml")
    assert (quiet.code, quiet.out, quiet.err) == (70, "", BUG)
    shown = cli("--traceback", "validate", "plan.yaml")
    assert shown.code == 70
    assert "in broken\n" in shown.err and shown.err.endswith(BUG)
    usage = cli("validate")
    assert usage.code == 2 and "Error: Missing argument 'PLAN...'." in usage.err
    empty = cli("status", "--state-dir", str(tmp_path))
    assert (empty.code, empty.err) == (2, "runbook: no run in the journal yet\n")
