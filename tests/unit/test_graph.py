from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runbook.errors import UsageError
from runbook.graph import (
    Dag,
    digraph,
    find_cycles,
    generations,
    parse_spec,
    stages_or_cycles,
)
from runbook.plan import Plan, load_plan

DIAMOND = """\
version: 1
workflows:
  extract_a: {workflow_id: 1}
  extract_b: {workflow_id: 2}
  join: {workflow_id: 3, depends_on: [extract_a, extract_b]}
  report: {workflow_id: 4, depends_on: join}
  audit: {workflow_id: 5, depends_on: extract_b}
  lonely: {workflow_id: 6}
"""


def plan_of(tmp_path: Path, text: str) -> Plan:
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    return load_plan(path)


def dag_of(tmp_path: Path, text: str) -> Dag:
    return plan_of(tmp_path, text).dag


@pytest.fixture
def dag(tmp_path: Path) -> Dag:
    return dag_of(tmp_path, DIAMOND)


def test_stages_are_generations_sorted_by_name(dag: Dag) -> None:
    assert dag.stages() == [["extract_a", "extract_b", "lonely"], ["audit", "join"], ["report"]]


def test_closures(dag: Dag) -> None:
    assert dag.upstream_of("report") == {"join", "extract_a", "extract_b"}
    assert dag.downstream_of("extract_b") == {"join", "report", "audit"}
    assert dag.upstream_of("lonely") == set() == dag.downstream_of("lonely")


@pytest.mark.parametrize(
    ("selects", "excludes", "steps", "done"),
    [
        ((), (), {"extract_a", "extract_b", "join", "report", "audit", "lonely"}, set()),
        (("join",), (), {"join"}, {"extract_a", "extract_b"}),
        (("+join",), (), {"join", "extract_a", "extract_b"}, set()),
        (("join+",), (), {"join", "report"}, {"extract_a", "extract_b"}),
        (("+report+",), (), {"report", "join", "extract_a", "extract_b"}, set()),
        (("extract_b+",), (), {"extract_b", "join", "report", "audit"}, {"extract_a"}),
        (("join", "lonely"), (), {"join", "lonely"}, {"extract_a", "extract_b"}),
        ((), ("extract_b+",), {"extract_a", "lonely"}, set()),
        (("+report",), ("extract_a",), {"report", "join", "extract_b"}, {"extract_a"}),
        (("lonely",), ("lonely",), set(), set()),
    ],
)
def test_selection_specs(dag: Dag, selects, excludes, steps, done) -> None:
    selection = dag.select(selects, excludes)
    assert selection.steps == steps
    assert selection.assumed_done == done


def test_stages_of_a_selection_ignore_unselected_upstreams(dag: Dag) -> None:
    assert dag.stages(dag.select(["join+"]).steps) == [["join"], ["report"]]
    assert dag.stages(dag.select().steps) == dag.stages()


def test_unknown_name_is_a_usage_error_with_a_hint(dag: Dag) -> None:
    with pytest.raises(UsageError) as caught:
        dag.select(["+jion"])
    assert str(caught.value) == "--select '+jion': unknown step 'jion'; did you mean 'join'?"
    assert caught.value.exit_code == 2
    with pytest.raises(UsageError) as caught:
        dag.select([], ["nothing+"])
    assert str(caught.value) == "--exclude 'nothing+': unknown step 'nothing'"


@pytest.mark.parametrize("text", ["+", "++", "", "a+b", "+a++"])
def test_malformed_specs(text: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_spec(text, "--exclude")
    assert str(caught.value).startswith(f"--exclude {text!r}: expected NAME, +NAME")


def test_spec_forms() -> None:
    spec = parse_spec("+a.b-c+")
    assert (spec.name, spec.upstream, spec.downstream) == ("a.b-c", True, True)
    assert (parse_spec("a").upstream, parse_spec("a").downstream) == (False, False)


def test_cycles_one_per_knot_shortest_from_smallest_name() -> None:
    edges = [("a", "b"), ("b", "c"), ("c", "a"), ("c", "b"), ("x", "y"), ("y", "x"), ("d", "e")]
    assert find_cycles(digraph("abcdexy", edges)) == [["a", "b", "c"], ["x", "y"]]
    assert stages_or_cycles("abcdexy", edges) == ([], [["a", "b", "c"], ["x", "y"]])
    assert stages_or_cycles("abc", [("a", "b")]) == ([["a", "c"], ["b"]], [])


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 12).flatmap(
        lambda n: st.tuples(
            st.just(n), st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)))
        )
    )
)
def test_generations_agree_with_networkx(graph: tuple[int, list[tuple[int, int]]]) -> None:
    """The stdlib's sorter gives networkx's generations, and finds the same cycles."""
    import networkx as nx

    count, pairs = graph
    nodes = [f"n{i}" for i in range(count)]
    edges = [(f"n{a}", f"n{b}") for a, b in pairs]
    g = digraph(nodes, edges)
    try:
        expected = [sorted(stage) for stage in nx.topological_generations(g)]
    except nx.NetworkXUnfeasible:
        expected = None
    assert generations(nodes, edges) == expected


FINALLY = """\
version: 1
finally: [release, page]
workflows:
  extract: {workflow_id: 1}
  load: {workflow_id: 2, depends_on: extract}
  side: {workflow_id: 3}
  release: {workflow_id: 4}
  page: {workflow_id: 5, depends_on: release, run_if: failure}
"""


@pytest.fixture
def last(tmp_path: Path) -> Dag:
    return dag_of(tmp_path, FINALLY)


def test_finally_steps_come_last_and_wait_for_every_selected_step(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, FINALLY)
    last = plan.dag
    assert last.stages() == [["extract", "side"], ["load"], ["release"], ["page"]]
    assert plan.edge_count == 2  # only the written edges
    assert plan.steps["release"].run_if == "always" and plan.steps["page"].run_if == "failure"
    everything = set(plan.steps)
    assert plan.upstreams("release", everything) == ("extract", "load", "side")
    assert plan.upstreams("page", everything) == ("release", "extract", "load", "side")
    assert plan.upstreams("load", {"load", "release"}) == ()  # extract: not selected
    assert plan.upstreams("release", {"side", "release"}) == ("side",)
    assert last.stages({"side", "release", "page"}) == [["side"], ["release"], ["page"]]


@pytest.mark.parametrize(
    ("selects", "excludes", "steps", "done"),
    [
        (("load",), (), {"load", "release", "page"}, {"extract"}),
        (("+release",), (), {"extract", "load", "side", "release", "page"}, set()),
        (("extract+",), (), {"extract", "load", "release", "page"}, set()),
        ((), ("release",), {"extract", "load", "side", "page"}, {"release"}),
        ((), ("load+",), {"extract", "side", "release", "page"}, set()),
        (("side",), ("page", "release"), {"side"}, set()),
    ],
)
def test_finally_steps_join_every_selection_unless_excluded_by_name(
    last: Dag, selects, excludes, steps, done
) -> None:
    selection = last.select(selects, excludes)
    assert selection.steps == steps
    assert selection.assumed_done == done
