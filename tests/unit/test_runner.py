"""apply's options, checked as a whole the moment they are made."""

from __future__ import annotations

import pytest

from runbook.errors import UsageError
from runbook.options import ApplyOptions


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"scenario": "s.yaml"}, "--scenario configures the built-in simulator: add --sandbox"),
        ({"sandbox": True, "api_url": "http://x"}, "--sandbox runs against the built-in"),
        ({"sandbox": True, "token_file": "t"}, "--sandbox needs no token: drop --token-file"),
        ({"retrigger_unknown": True}, "--retrigger-unknown goes with --resume"),
        ({"resume": True, "sandbox": True}, "--resume cannot use --sandbox"),
        ({"max_parallel": 0}, "--max-parallel must be at least 1"),
        ({"sandbox": True, "token_command": "t"}, "--sandbox needs no token: drop --token-comm"),
        ({"token_file": "f", "token_command": "c"}, "--token-file and --token-command are two"),
        ({"token_ttl": 2.0}, "--token-ttl configures the built-in simulator: add --sandbox"),
        ({"sandbox": True, "token_ttl": 0.0}, "--token-ttl must be more than 0 s"),
        ({"resume": True, "new_run": True}, "--new-run starts a new run and --resume contin"),
        ({"token_command": "  "}, "--token-command is empty: give the command that prints"),
    ],
)
def test_contradictions_are_usage_errors(flags: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        ApplyOptions(plan_path="p.yaml", **flags)


def test_the_resume_command_and_what_the_journal_keeps() -> None:
    options = ApplyOptions(
        plan_path="plans/n.yaml",
        state_dir="/srv/state",
        token_file="/etc/runbook/token",
        max_parallel=8,
        selects=("+report",),
    )
    assert options.resume_command == (
        "runbook apply plans/n.yaml --resume --state-dir /srv/state "
        "--token-file /etc/runbook/token --select +report"
    )
    command = ApplyOptions(plan_path="my plan.yaml", token_command="vault read -field=t x/y")
    assert (
        command.resume_command
        == "runbook apply 'my plan.yaml' --resume --token-command 'vault ...'"
    )
    assert ApplyOptions(plan_path="p.yaml").resume_command == "runbook apply p.yaml --resume"
    assert options.recorded == {
        "api_url": None,
        "sandbox": False,
        "scenario": None,
        "max_parallel": 8,
        "select": ["+report"],
        "exclude": [],
    }  # never the token file: it says where a secret is
    with pytest.raises(AttributeError):
        options.resume = True  # type: ignore[misc]


def test_the_targets_say_every_problem_and_keep_a_single_ones_exit_code(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runbook import target
    from runbook.errors import ConfigError, CredentialCacheError
    from runbook.plan import load_plan

    plan_path = tmp_path / "p.yaml"
    plan_path.write_text(
        "version: 1\nnotify: [{webhook_env: HOOK}]\nworkflows: {a: {workflow_id: 1}}\n"
    )
    plan = load_plan(plan_path)

    def broken_cache(*args, **kwargs):
        raise CredentialCacheError("the credential cache is not yours")

    def targets() -> object:
        return target.targets(
            plan,
            sandbox=False,
            api_url=None,
            token_file=None,
            token_command=None,
            state_dir=tmp_path,
        )

    monkeypatch.setattr(target, "api_target", broken_cache)
    monkeypatch.setenv("HOOK", "https://hooks.example.com/x")
    with pytest.raises(CredentialCacheError) as alone:
        targets()
    assert alone.value.exit_code == 5  # a single problem keeps its class and code
    monkeypatch.delenv("HOOK")
    with pytest.raises(ConfigError) as both:
        targets()
    assert str(both.value) == (
        "the credential cache is not yours\nrunbook: notify[0]: the environment variable "
        "HOOK is not set or empty"
    )
    assert both.value.exit_code == 3  # the first kind, in the order 2, 3, 4, 5
