"""The compiled all-succeed replay against the scheduling core it stands in for: on
random plans (``run_if`` words and mappings, every policy), random durations and slot
counts, every step starts and ends at the same moment, and the run ends at the same
moment, as the core drives it (the forecast's ``_simulate``)."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from runbook.conditions import Condition
from runbook.forecast import _simulate
from runbook.replay import Replay

from .test_schedule import plans


def _with_ghost(condition: Condition, data: st.DataObject) -> Condition:
    if not data.draw(st.booleans(), label="ghost"):
        return condition
    outcome = data.draw(st.sampled_from(["succeeded", "failed", "passed"]), label="ghost is")
    return Condition((*condition.entries, ("ghost", (outcome,))), condition.listed)


def key(name: str) -> tuple[int, str]:
    return (int(name[1:]), name)


@settings(max_examples=400, deadline=None)
@given(plan=plans(), data=st.data())
def test_the_replay_ends_every_step_when_the_core_would(plan, data) -> None:
    durations = {
        rule.name: data.draw(st.sampled_from([0.0, 1.0, 2.5, 7.0]), label=rule.name)
        for rule in plan
    }
    parallel = data.draw(st.integers(1, 4), label="parallel")
    # a mapping may name an upstream that is not selected: it counts as succeeded
    plan = [
        replace(rule, run_if=_with_ghost(rule.run_if, data))
        if isinstance(rule.run_if, Condition)
        else rule
        for rule in plan
    ]
    makespan, starts, ends, _ = _simulate(plan, key, durations, parallel)
    replay = Replay.of(plan, key)
    got = replay.run(replay.order_durations(durations), parallel)
    assert got == (makespan, starts, ends)


def test_a_mapping_an_unselected_upstream_rules_out_is_decided_at_the_start() -> None:
    from runbook.schedule import Rule

    rollback = Condition.of({"a": "succeeded", "ghost": "failed"})  # ghost: not selected
    plan = [Rule("s0"), Rule("s1", ("s0",), rollback), Rule("s2", ("s1",))]
    durations = {"s0": 5.0, "s1": 1.0, "s2": 1.0}
    replay = Replay.of(plan, key)
    makespan, starts, ends = replay.run(replay.order_durations(durations), 2)
    assert starts == {"s0": 0.0, "s2": 0.0}  # the skipped rollback passed at once
    assert (makespan, starts, ends) == _simulate(plan, key, durations, 2)[:3]


def test_a_skip_is_decided_when_the_upstream_that_rules_it_out_ends() -> None:
    from runbook.schedule import Rule

    plan = [
        Rule("s0"),
        Rule("s1", ("s0",), "failure"),  # skipped when s0 has ended: nothing failed
        Rule("s2", ("s1",), Condition.of({"s1": "succeeded"})),  # skipped with it
        Rule("s3", ("s2",), "always"),  # runs once s2 is decided, not before
    ]
    durations = {"s0": 5.0, "s1": 1.0, "s2": 1.0, "s3": 1.0}
    replay = Replay.of(plan, key)
    got = replay.run(replay.order_durations(durations), 2)
    assert got == (6.0, {"s0": 0.0, "s3": 5.0}, {"s0": 5.0, "s3": 6.0})
    assert got == _simulate(plan, key, durations, 2)[:3]


@settings(max_examples=400, deadline=None)
@given(plan=plans(), data=st.data())
def test_the_replay_of_a_run_under_way_ends_every_step_when_the_core_would(plan, data) -> None:
    """As the forecast made while a run goes sees it: some steps ended (whatever their
    outcome, they count as done), some running for a while and holding their slots."""
    durations = {
        rule.name: data.draw(st.sampled_from([0.0, 1.0, 2.5, 7.0]), label=rule.name)
        for rule in plan
    }
    parallel = data.draw(st.integers(1, 4), label="parallel")
    done: list[str] = []
    for rule in plan:  # a step ends after its upstreams
        if all(up in done for up in rule.upstreams) and data.draw(st.booleans(), label="done"):
            done.append(rule.name)
    startable = [
        rule.name
        for rule in plan
        if rule.name not in done and all(up in done for up in rule.upstreams)
    ]
    chosen = (
        data.draw(st.lists(st.sampled_from(startable), unique=True, max_size=parallel))
        if startable
        else []
    )
    under_way = {
        name: data.draw(st.sampled_from([0.0, 0.5, 2.5, 9.0]), label=f"{name} age")
        for name in chosen
    }
    makespan, starts, ends, _ = _simulate(plan, key, durations, parallel, done, under_way)
    replay = Replay.of(plan, key, done=done, under_way=under_way)
    got = replay.run(replay.order_durations(durations), parallel)
    assert got == (makespan, starts, ends)
