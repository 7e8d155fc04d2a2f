"""Fuzzing what users write: random YAML, random bytes and mutations of real files, fed
to the plan loader, the scenario loader and ``runbook validate``. The only outcome
besides success is the documented error: problems at ``FILE:LINE:COLUMN`` with a
message of bounded length, exit code 2, and never a traceback.

(Plan-specific properties — random DAGs, back edges, mutated plans, random bytes —
are in ``test_plan_properties.py``.)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runbook.errors import InputError, PlanError, ScenarioError
from runbook.plan import load_plan
from runbook.sandbox.scenario import load_scenario

DATA = Path(__file__).parent.parent / "data"
SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
MESSAGE_LIMIT = 600  # a message quotes what it must, never a whole huge value

PLAN_WORDS = [
    "version", "name", "workflows", "defaults", "workflow_id", "depends_on", "retries",
    "retry_delay", "timeout", "poll_interval", "max_poll_interval", "on_failure",
    "max_parallel", "description", "token", "continue", "stop", "1h", "0s", "-1", "extract",
]  # fmt: skip
SCENARIO_WORDS = [
    "seed", "default", "workflows", "faults", "queue", "duration", "outcome", "errors",
    "warnings", "fail_first", "exists", "running_state", "error_rate", "errors_on",
    "unavailable_rate", "lost_answer_rate", "rate_limit", "retry_after", "latency",
    "forever", "succeeded", "failed", "poll", "trigger", "date", "seconds", "20ms",
]  # fmt: skip


def scalars(words: list[str]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.sampled_from(words),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=True, allow_infinity=True),
        st.booleans(),
        st.none(),
        st.text(max_size=20),
    )


def documents(words: list[str]) -> st.SearchStrategy[Any]:
    keys = st.one_of(st.sampled_from(words), st.integers(-5, 200), st.text(max_size=8))
    return st.recursive(
        scalars(words),
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=5)
        ),
        max_leaves=30,
    )


def top_level(words: list[str]) -> st.SearchStrategy[Any]:
    """Mostly mappings of the file's own keys, so that the schema is really exercised."""
    return st.one_of(
        st.dictionaries(st.sampled_from(words), documents(words), max_size=6),
        documents(words),
    )


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One directory for the module: each example overwrites the same input file."""
    return tmp_path_factory.mktemp("fuzz")


def written(directory: Path, text: str | bytes) -> Path:
    path = directory / "input.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    return path


def check_problems(error: InputError, path: Path) -> None:
    assert error.problems
    for problem in error.problems:
        assert problem.file == str(path)
        assert problem.line >= 1 and problem.column >= 1
        assert problem.message and len(problem.message) <= MESSAGE_LIMIT, problem.message
        assert re.match(rf"{re.escape(str(path))}:\d+:\d+: \S", str(problem))


def dump(value: Any, flow: bool) -> str:
    return yaml.safe_dump(value, default_flow_style=flow, allow_unicode=True, sort_keys=False)


def mutate(text: str, edits: list[tuple[str, int, str]]) -> str:
    for action, where, char in edits:
        at = where % (len(text) + 1)
        if action == "delete":
            text = text[:at] + text[at + 1 :]
        elif action == "insert":
            text = text[:at] + char + text[at:]
        elif action == "replace":
            text = text[:at] + char + text[at + 1 :]
        else:  # swap this line with the next
            lines = text.split("\n")
            i = at % max(1, len(lines) - 1)
            lines[i : i + 2] = lines[i : i + 2][::-1]
            text = "\n".join(lines)
    return text


EDITS = st.lists(
    st.tuples(
        st.sampled_from(["delete", "insert", "replace", "swap"]),
        st.integers(0, 10**6),
        st.sampled_from([*list(":-[]{}&*!|>'\"#%@`, \n\t0a"), "\x00", "\u2028", "\ufeff"]),
    ),
    min_size=1,
    max_size=8,
)


# -- the plan loader --------------------------------------------------------------------


@SETTINGS
@given(top_level(PLAN_WORDS), st.booleans())
def test_random_yaml_is_a_plan_or_plan_errors(scratch: Path, value: Any, flow: bool) -> None:
    path = written(scratch, dump(value, flow))
    try:
        load_plan(path)
    except PlanError as error:
        check_problems(error, path)


VALID_PLANS = sorted((DATA / "plans" / "valid").glob("*.yaml"))


@SETTINGS
@given(st.sampled_from(VALID_PLANS), EDITS)
def test_mutated_valid_plans_are_plans_or_plan_errors(
    scratch: Path, source: Path, edits: list
) -> None:
    path = written(scratch, mutate(source.read_text(), edits))
    try:
        load_plan(path)
    except PlanError as error:
        check_problems(error, path)


@pytest.mark.parametrize(
    "text",
    [
        "version: 1\nname: " + "n" * 5_000_000 + "\nworkflows: {a: {workflow_id: 1}}\n",
        "version: 1\nworkflows:\n  " + "s" * 2_000_000 + ": {workflow_id: 1}\n",
        "version: 1\nworkflows: {a: {workflow_id: " + "9" * 100_000 + "}}\n",
        "version: 1\nworkflows: {a: {workflow_id: 1, timeout: '" + "1h" * 500_000 + "1q'}}\n",
        "version: 1\nworkflows: {a: {workflow_id: 1, depends_on: [" + "b, " * 200_000 + "]}}\n",
    ],
    ids=["huge name", "huge step name", "huge integer", "huge duration", "huge list"],
)
def test_huge_values_get_short_messages(scratch: Path, text: str) -> None:
    path = written(scratch, text)
    with pytest.raises(PlanError) as caught:
        load_plan(path)
    check_problems(caught.value, path)
    assert len(str(caught.value)) < 20 * MESSAGE_LIMIT


# -- the scenario loader ----------------------------------------------------------------


@SETTINGS
@given(top_level(SCENARIO_WORDS), st.booleans())
def test_random_yaml_is_a_scenario_or_scenario_errors(
    scratch: Path, value: Any, flow: bool
) -> None:
    path = written(scratch, dump(value, flow))
    try:
        load_scenario(path)
    except ScenarioError as error:
        check_problems(error, path)


@SETTINGS
@given(EDITS)
def test_mutated_scenarios_are_scenarios_or_scenario_errors(scratch: Path, edits: list) -> None:
    path = written(scratch, mutate((DATA / "scenarios" / "every_key.yaml").read_text(), edits))
    try:
        load_scenario(path)
    except ScenarioError as error:
        check_problems(error, path)


@SETTINGS
@given(st.binary(max_size=400))
def test_random_bytes_are_scenario_errors_at_worst(scratch: Path, raw: bytes) -> None:
    path = written(scratch, raw)
    try:
        load_scenario(path)
    except ScenarioError as error:
        check_problems(error, path)


ATTACKS = {
    "alias bomb": "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    ),
    "deep nesting": "default: " + "[" * 5000 + "]" * 5000 + "\n",
    "non-UTF-8": b"default: {queue: \xff\xfe}\n",
    "recursive alias": "default: &d {queue: *d}\n",
    "python tag": "default: !!python/object:os.system {}\n",
}


@pytest.mark.parametrize("attack", ATTACKS.values(), ids=ATTACKS.keys())
def test_hostile_scenarios_are_refused_with_positions(scratch: Path, attack: str | bytes) -> None:
    path = written(scratch, attack)
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    check_problems(caught.value, path)


# -- the command line ---------------------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.one_of(st.binary(max_size=300), top_level(PLAN_WORDS).map(lambda v: dump(v, False))))
def test_validate_answers_exit_2_with_located_problems(
    scratch: Path, cli, data: str | bytes
) -> None:
    path = written(scratch, data)
    result = cli("validate", str(path))
    assert result.code in (0, 2), result.err
    assert "Traceback" not in result.out + result.err
    if result.code == 2:
        lines = result.err.splitlines()
        assert lines and all(line.startswith((f"{path}:", "runbook: ", "  ")) for line in lines), (
            result.err
        )


def test_control_characters_in_a_plan_never_reach_the_terminal(scratch: Path, cli) -> None:
    path = written(
        scratch,
        'version: 1\nworkflows:\n  "\\e[31mred": null\n  "\\x1e": {workflow_id: 1}\n'
        '  ok: {workflow_id: 2, depends_on: ["\\e]0;title\\a", "\\x1e\\x1e"]}\n',
    )
    result = cli("validate", str(path))
    assert result.code == 2
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f]", result.err), result.err
    assert "'\\x1b[31mred'" in result.err and "unknown step '\\x1b]0;title\\x07'" in result.err
