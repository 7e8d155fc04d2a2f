from __future__ import annotations

import gc
from pathlib import Path

import pytest

from runbook.errors import PlanError
from runbook.plan import BUILTIN_DEFAULTS, load_plan
from tests.support.paths import DATA, ROOT

INVALID = sorted((DATA / "plans" / "invalid").glob("*.yaml"))
VALID = sorted((DATA / "plans" / "valid").glob("*.yaml"))
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def expected_problems(path: Path) -> list[str]:
    prefix = "# expect: "
    return [
        line[len(prefix) :] for line in path.read_text().splitlines() if line.startswith(prefix)
    ]


@pytest.mark.parametrize("path", INVALID, ids=lambda path: path.stem)
def test_each_invalid_plan_reports_exactly_its_problems(path: Path) -> None:
    """Each file breaks one rule of docs/plan-format.md; its header says what must be reported."""
    expected = expected_problems(path)
    assert expected, f"{path.name} has no '# expect:' lines"
    with pytest.raises(PlanError) as caught:
        load_plan(path)
    assert [f"{p.line}:{p.column}: {p.message}" for p in caught.value.problems] == expected
    assert all(p.file == str(path) for p in caught.value.problems)
    assert caught.value.exit_code == 2


def test_every_problem_is_reported_in_one_pass() -> None:
    with pytest.raises(PlanError) as caught:
        load_plan(DATA / "plans" / "invalid" / "many_errors.yaml")
    assert len(caught.value.problems) == 20
    kinds = " ".join(p.message for p in caught.value.problems)
    for fragment in (
        "duplicate key",
        "unknown key",
        "missing required key",
        "cycle",
        "is listed twice",
        "cannot depend on itself",
        "unknown step",
        "must be a duration",
        "is not one of",
        "expected an integer",
        "is not a valid step name",
        "minimum",
    ):
        assert fragment in kinds


@pytest.mark.parametrize("path", VALID + EXAMPLES, ids=lambda path: path.name)
def test_valid_plans_and_examples_load(path: Path) -> None:
    plan = load_plan(path)
    assert plan.steps
    assert plan.path == str(path)


def write(tmp_path: Path, text: str, name: str = "plan.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_builtin_defaults_and_name_from_file(tmp_path: Path) -> None:
    plan = load_plan(
        write(tmp_path, "version: 1\nworkflows:\n  a: {workflow_id: 5}\n", "nightly.prod.yaml")
    )
    assert plan.name == "nightly.prod"
    assert plan.description is None
    assert plan.max_parallel == 4
    assert plan.api.base_url == "https://app.nexadata.com/api/v1"
    assert plan.api.token_env == "NEXADATA_TOKEN"
    step = plan.steps["a"]
    assert (step.workflow_id, step.depends_on, step.description) == (5, (), None)
    assert step.on_failure == "stop" and step.retries == 0
    assert (step.retry_delay, step.timeout) == (30.0, 6 * 3600.0)
    assert (step.poll_interval, step.max_poll_interval) == (5.0, 60.0)
    assert dict(BUILTIN_DEFAULTS)["timeout"] == step.timeout


def test_precedence_step_over_defaults_over_builtin(tmp_path: Path) -> None:
    plan = load_plan(
        write(
            tmp_path,
            """\
version: 1
name: p
max_parallel: 9
defaults: {retries: 2, timeout: 1h, on_failure: continue}
workflows:
  a: {workflow_id: 1, retries: 0}
  b: {workflow_id: 2, depends_on: a, timeout: 90}
""",
        )
    )
    a, b = plan.steps["a"], plan.steps["b"]
    assert (a.retries, a.timeout, a.on_failure) == (0, 3600.0, "continue")
    assert (b.retries, b.timeout, b.depends_on) == (2, 90.0, ("a",))
    assert plan.max_parallel == 9 and plan.edge_count == 1


def test_max_poll_interval_follows_a_longer_poll_interval_unless_set(tmp_path: Path) -> None:
    plan = load_plan(
        write(
            tmp_path,
            """\
version: 1
workflows:
  slow: {workflow_id: 1, poll_interval: 2m}
  capped: {workflow_id: 2, poll_interval: 2m, max_poll_interval: 2m}
""",
        )
    )
    assert plan.steps["slow"].max_poll_interval == 120.0
    assert plan.steps["capped"].max_poll_interval == 120.0


def test_stages_and_graph_are_resolved(tmp_path: Path) -> None:
    plan = load_plan(
        write(
            tmp_path,
            """\
version: 1
workflows:
  z: {workflow_id: 1}
  a: {workflow_id: 2}
  m: {workflow_id: 3, depends_on: [z, a]}
""",
        )
    )
    assert plan.stages == (("a", "z"), ("m",))
    assert sorted(plan.dag.g.edges) == [("a", "m"), ("z", "m")]
    assert list(plan.steps) == ["z", "a", "m"]  # the file's order


def test_sha256_is_of_the_bytes(tmp_path: Path) -> None:
    import hashlib

    path = write(tmp_path, "version: 1\nworkflows:\n  a: {workflow_id: 1}\n")
    assert load_plan(path).sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_garbage_collection_is_restored(tmp_path: Path) -> None:
    path = write(tmp_path, "version: 1\nworkflows: {a: {workflow_id: 1}}\n")
    assert gc.isenabled()
    load_plan(path)
    assert gc.isenabled()
    with pytest.raises(PlanError):
        load_plan(write(tmp_path, "version: 1\n", "bad.yaml"))
    assert gc.isenabled()


@pytest.mark.parametrize("text", ["version: 1\nworkflows:\n  a: {workflow_id: 1}\n"])
def test_unreadable_path_is_a_plan_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(PlanError) as caught:
        load_plan(tmp_path)
    assert str(caught.value) == f"{tmp_path}:1:1: is a directory, not a YAML file"


def test_alias_bomb_plan_is_refused(tmp_path: Path) -> None:
    from tests.unit.test_yamldoc import billion_laughs

    with pytest.raises(PlanError) as caught:
        load_plan(write(tmp_path, "version: 1\n" + billion_laughs()))
    assert len(caught.value.problems) == 1
    assert "alias bomb" in caught.value.problems[0].message
