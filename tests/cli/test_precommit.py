"""The ``runbook-validate`` pre-commit hook, through real ``pre-commit try-repo`` on a
throwaway repository of plans: it installs runbook from this repository, as a plan
repository's ``.pre-commit-config.yaml`` would, and validates every plan it is given."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.support.paths import DATA, REAL_PIP_CACHE, ROOT

README = (ROOT / "README.md").read_text()


def pre_commit(*argv: str, cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).parent / "pre-commit"
    identity = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid"}
    identity |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}
    env = {
        **os.environ,
        **identity,
        "PRE_COMMIT_HOME": str(home),
        "PIP_CACHE_DIR": str(REAL_PIP_CACHE),  # wheels already fetched: no need to again
        "NO_COLOR": "1",
        # the runbook of this environment first, as an activated virtualenv has it
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    return subprocess.run(
        [str(script) if script.exists() else "pre-commit", *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
    )


def test_the_hook_is_declared_for_plans() -> None:
    (hook,) = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert hook["id"] == "runbook-validate"
    assert hook["entry"] == "runbook validate" and hook["language"] == "python"
    assert hook["types"] == ["yaml"]


def test_try_repo_passes_a_valid_plan_and_fails_an_invalid_one(tmp_path: Path) -> None:
    plans = tmp_path / "plans"
    plans.mkdir()
    subprocess.run(["git", "init", "-q", str(plans)], check=True)
    shutil.copy(ROOT / "examples" / "nightly.yaml", plans / "nightly.yaml")
    shutil.copy(DATA / "plans" / "invalid" / "cycle.yaml", plans / "broken.yaml")
    subprocess.run(["git", "add", "."], cwd=plans, check=True)
    home = tmp_path / "pre-commit-home"

    failed = pre_commit(
        "try-repo", str(ROOT), "runbook-validate", "--all-files", cwd=plans, home=home
    )
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "validate runbook plans" in failed.stdout and "Failed" in failed.stdout
    assert "- exit code: 2" in failed.stdout
    assert "broken.yaml:6:17: dependency cycle: a -> b -> c -> a" in failed.stdout
    assert "nightly.yaml: ok (11 workflows, 11 dependencies)" in failed.stdout

    (plans / "broken.yaml").unlink()
    subprocess.run(["git", "add", "-A"], cwd=plans, check=True)
    passed = pre_commit(
        "try-repo", str(ROOT), "runbook-validate", "--all-files", cwd=plans, home=home
    )
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "Passed" in passed.stdout


def test_the_local_hook_the_docs_show_uses_the_installed_runbook(tmp_path: Path) -> None:
    """The ``repo: local`` form of README, needing no tag and no network: pre-commit
    runs the ``runbook`` on PATH (here, this environment's)."""
    block = re.search(r"```yaml\n(# \.pre-commit-config\.yaml\n.*?)```", README, re.S)
    assert block is not None
    plans = tmp_path / "repo"
    (plans / "plans").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(plans)], check=True)
    (plans / ".pre-commit-config.yaml").write_text(block[1])
    shutil.copy(ROOT / "examples" / "nightly.yaml", plans / "plans" / "nightly.yaml")
    shutil.copy(DATA / "plans" / "invalid" / "cycle.yaml", plans / "plans" / "broken.yaml")
    (plans / "ci.yaml").write_text("jobs: {}\n")  # YAML that is no plan: not checked
    subprocess.run(["git", "add", "."], cwd=plans, check=True)
    home = tmp_path / "pre-commit-home"
    failed = pre_commit("run", "--all-files", cwd=plans, home=home)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "plans/broken.yaml:6:17: dependency cycle: a -> b -> c -> a" in failed.stdout
    assert "ci.yaml" not in failed.stdout
    (plans / "plans" / "broken.yaml").unlink()
    subprocess.run(["git", "add", "-A"], cwd=plans, check=True)
    passed = pre_commit("run", "--all-files", cwd=plans, home=home)
    assert passed.returncode == 0, passed.stdout + passed.stderr
