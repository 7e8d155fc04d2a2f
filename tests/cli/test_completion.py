"""Shell completion, as README tells users to set it up: click's scripts for bash, zsh
and fish from the real ``runbook`` executable, and a real bash completing with one."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.support.entry import entry_point


def complete(variable: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        entry_point(),
        env={**os.environ, "_RUNBOOK_COMPLETE": variable, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("shell", "registration"),
    [
        ("bash", "complete -o nosort -F _runbook_completion runbook"),
        ("zsh", "compdef _runbook_completion runbook"),
        ("fish", "complete --no-files --command runbook"),
    ],
)
def test_each_shell_gets_its_completion_script(shell: str, registration: str) -> None:
    done = complete(f"{shell}_source")
    assert done.returncode == 0 and done.stderr == ""
    assert "_runbook_completion" in done.stdout and registration in done.stdout


@pytest.mark.parametrize(
    ("words", "cword", "expected"),
    [
        ("runbook ap", 1, ["plain,apply"]),
        ("runbook plan x --format ", 4, ["plain,text", "plain,json"]),
        ("runbook apply p.yaml --state-dir ", 4, ["dir,"]),
        ("runbook apply p.yaml --report ", 4, ["file,"]),
    ],
)
def test_words_commands_choices_files_and_dirs_complete(words, cword, expected) -> None:
    done = complete("bash_complete", COMP_WORDS=words, COMP_CWORD=str(cword))
    assert done.returncode == 0
    assert done.stdout.split() == expected


def test_plans_steps_and_run_ids_complete(tmp_path, monkeypatch) -> None:
    """After PLAN: only YAML files and folders; after -s/-x: the plan's step names (with
    the + typed); after status: the journal's run ids, read without touching it."""
    from tests.support.paths import ROOT

    (tmp_path / "plans").mkdir()
    for name in ("nightly.yaml", "notes.txt", "other.yml"):
        (tmp_path / name).write_text("")
    monkeypatch.chdir(tmp_path)

    def offered(words: str, cword: int, **env: str) -> list[str]:
        done = complete("bash_complete", COMP_WORDS=words, COMP_CWORD=str(cword), **env)
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert offered("runbook apply ", 2) == ["plain,nightly.yaml", "plain,other.yml", "plain,plans/"]
    assert offered("runbook validate n", 2) == ["plain,nightly.yaml"]
    plan = str(ROOT / "examples" / "nightly.yaml")
    assert offered(f"runbook apply {plan} -s +build", 4) == ["plain,+build_sales_mart"]
    assert offered(f"runbook plan {plan} --exclude refresh", 4) == ["plain,refresh_dashboards"]
    state = tmp_path / "state"
    assert offered("runbook status ", 2, RUNBOOK_STATE_DIR=str(state)) == []
    assert not state.exists()  # completion created nothing
    from runbook.journal import Store
    from tests.unit.test_journal import recorded_run

    with Store(state) as journal:
        recorded_run(journal)
        recorded_run(journal)
    assert offered("runbook status ", 2, RUNBOOK_STATE_DIR=str(state)) == ["plain,2", "plain,1"]
    assert offered("runbook status --state-dir state ", 4) == ["plain,2", "plain,1"]  # relative


def test_a_real_bash_completes_with_the_script() -> None:
    script = complete("bash_source").stdout
    command = (
        f"{script}\n"
        # bash calls the function with the command, the word and the word before it
        "COMP_WORDS=(runbook hi); COMP_CWORD=1; _runbook_completion runbook hi runbook\n"
        'echo "${COMPREPLY[@]}"'
    )
    done = subprocess.run(
        ["bash", "--norc", "-c", command],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PATH": os.path.dirname(entry_point()[0]) + ":" + os.environ["PATH"]},
    )
    assert done.stdout.split() == ["history"], done.stderr
