"""Property tests: random DAG plans load and order correctly; nothing else ever escapes."""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from runbook.errors import PlanError
from runbook.plan import load_plan

NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.-]{0,12}", fullmatch=True)
SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@st.composite
def dag_plans(draw: st.DrawFn) -> dict:
    names = draw(st.lists(NAMES, min_size=1, max_size=25, unique=True))
    steps = {}
    for index, name in enumerate(names):
        upstream = draw(
            st.lists(st.sampled_from(names[:index]), unique=True, max_size=3)
            if index
            else st.just([])
        )
        step: dict = {"workflow_id": draw(st.integers(1, 10**6))}
        if upstream:
            step["depends_on"] = (
                upstream[0] if len(upstream) == 1 and draw(st.booleans()) else upstream
            )
        if draw(st.booleans()):
            step["retries"] = draw(st.integers(0, 100))
        if draw(st.booleans()):
            step["timeout"] = draw(st.sampled_from(["1h", "90s", 30, 0.5, "1h30m", "2d"]))
        steps[name] = step
    order = draw(st.permutations(names))
    return {"version": 1, "workflows": {name: steps[name] for name in order}}


def load_text(text: str | bytes) -> object:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "plan.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
        return load_plan(path)


@SETTINGS
@given(dag_plans())
def test_every_acyclic_plan_validates_and_stages_respect_every_edge(data: dict) -> None:
    plan = load_text(yaml.safe_dump(data, sort_keys=False))
    position = {name: number for number, stage in enumerate(plan.stages) for name in stage}
    assert set(position) == set(data["workflows"])
    for step in plan.steps.values():
        for upstream in step.depends_on:
            assert position[upstream] < position[step.name]
        if step.depends_on:  # a stage is as early as its upstreams allow
            assert position[step.name] == 1 + max(position[u] for u in step.depends_on)
    for stage in plan.stages:
        assert list(stage) == sorted(stage)


@SETTINGS
@given(dag_plans(), st.data())
def test_a_back_edge_is_always_reported_as_a_cycle(data: dict, draw: st.DataObject) -> None:
    names = list(data["workflows"])
    deps = {n: s.get("depends_on", []) for n, s in data["workflows"].items()}
    edges = [(u, n) for n, ups in deps.items() for u in ([ups] if isinstance(ups, str) else ups)]
    assume(edges)
    upstream, downstream = draw.draw(st.sampled_from(edges))
    step = data["workflows"][upstream]
    current = step.get("depends_on", [])
    step["depends_on"] = ([current] if isinstance(current, str) else current) + [downstream]
    try:
        load_text(yaml.safe_dump(data, sort_keys=False))
    except PlanError as error:
        assert any("dependency cycle: " in p.message for p in error.problems), error
    else:
        raise AssertionError(f"a cycle through {upstream} and {downstream} of {names} passed")


MUTATIONS = st.sampled_from(["delete", "duplicate", "insert", "replace"])


@SETTINGS
@given(
    dag_plans(),
    st.lists(st.tuples(MUTATIONS, st.integers(0, 10**6), st.characters()), min_size=1, max_size=6),
)
def test_mutated_plans_raise_nothing_but_plan_errors(data: dict, edits: list) -> None:
    text = yaml.safe_dump(data, sort_keys=False)
    for action, where, char in edits:
        at = where % (len(text) + 1)
        if action == "delete":
            text = text[:at] + text[at + 1 :]
        elif action == "duplicate":
            line_start = text.rfind("\n", 0, at) + 1
            line_end = text.find("\n", at)
            line = text[line_start : line_end if line_end >= 0 else len(text)]
            text = text[:line_start] + line + "\n" + text[line_start:]
        elif action == "insert":
            text = text[:at] + char + text[at:]
        else:
            text = text[:at] + char + text[at + 1 :]
    try:
        load_text(text)
    except PlanError as error:
        assert error.problems
        for problem in error.problems:
            assert problem.line >= 1 and problem.column >= 1 and problem.message


@SETTINGS
@given(st.binary(max_size=400))
def test_random_bytes_raise_nothing_but_plan_errors(raw: bytes) -> None:
    try:
        load_text(raw)
    except PlanError as error:
        assert error.problems
