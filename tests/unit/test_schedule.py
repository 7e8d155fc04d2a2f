"""The scheduler core: every rule of "Conditional steps", "Failure policies" and "Run
outcome", checked on examples and, with hypothesis, on random plans driven to random ends.

The core has no clock and no I/O: these tests drive it by hand, in microseconds.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runbook.schedule import FINAL_STATES, NOTHING_FAILED, Rule, Schedule


def run(rules, endings, *, succeeded=(), running=()):
    """Drive a schedule to its end: start whatever is ready, in order, one at a time, and
    end each started step as ``endings`` says (default succeeded)."""
    core = Schedule(rules, succeeded=succeeded, running=running)
    core.begin()
    order = []
    queue = list(running)
    while True:
        for name in core.ready():
            assert core.start(name)
            queue.append(name)
        if not queue:
            break
        name = queue.pop(0)
        order.append(name)
        core.finish(name, endings.get(name, "succeeded"))
    return core, order


def states(core):
    return dict(core.states())


# -- the rules, row by row --------------------------------------------------------------


def test_success_steps_run_in_order_and_the_run_succeeds() -> None:
    core, order = run([Rule("a"), Rule("b", ("a",)), Rule("c", ("b",))], {})
    assert order == ["a", "b", "c"]
    assert core.outcome() == "succeeded"


def test_stop_skips_below_the_failure_and_cancels_the_rest_but_runs_clean_up() -> None:
    rules = [
        Rule("bad"),
        Rule("slow"),
        Rule("after_bad", ("bad",)),
        Rule("after_slow", ("slow",)),
        Rule("later", ("after_slow",)),
        Rule("rollback", ("after_bad",), run_if="failure"),
        Rule("release", ("later", "bad"), run_if="always"),
    ]
    core = Schedule(rules)
    core.begin()
    assert core.ready() == ["bad", "slow"]
    assert core.start("bad") and core.start("slow")
    update = core.finish("bad", "failed")
    assert update.stopped == "step bad failed (on_failure: stop)"
    assert [(e.name, e.state) for e in update.ended] == [
        ("after_bad", "skipped"),
        ("after_slow", "cancelled"),
        ("later", "cancelled"),
    ]
    # the clean-up steps start at once; slow is still in flight
    assert core.ready() == ["release", "rollback"]
    assert core.start_reason("rollback") == "run_if failure: upstream after_bad skipped"
    assert core.start_reason("release") == (
        "run_if always: every upstream has ended (upstream bad failed, later cancelled)"
    )
    assert update.ended[1].reason == "not started: step bad failed (on_failure: stop)"
    assert update.ended[0].reason == "upstream bad did not succeed"
    for name in ("rollback", "release"):
        assert core.start(name)
        core.finish(name, "succeeded")
    core.finish("slow", "succeeded")
    assert core.outcome() == "failed"  # the clean-up succeeded: the failure stands
    assert core.unfinished == []


def test_a_failure_step_waits_for_an_execution_in_flight_after_a_stop() -> None:
    rules = [
        Rule("bad"),
        Rule("load"),
        Rule("rollback", ("load",), run_if="failure"),
    ]
    core = Schedule(rules)
    core.begin()
    for name in core.ready():
        core.start(name)
    core.finish("bad", "failed")
    assert core.ready() == []  # load is still running: nothing to judge yet
    core.finish("load", "failed")
    assert core.ready() == ["rollback"]


def test_failure_step_skipped_when_nothing_failed_passes_downstream() -> None:
    rules = [
        Rule("load"),
        Rule("rollback", ("load",), run_if="failure"),
        Rule("after", ("rollback",)),
    ]
    core, order = run(rules, {})
    assert order == ["load", "after"]
    assert core.state("rollback") == "skipped" and core.passed("rollback")
    assert core.outcome() == "succeeded"


def test_continue_skips_only_success_steps_below() -> None:
    rules = [
        Rule("bad", on_failure="continue"),
        Rule("below", ("bad",)),
        Rule("alert", ("bad",), run_if="failure"),
        Rule("other"),
    ]
    core, _order = run(rules, {"bad": "failed"})
    assert states(core) == {
        "bad": "failed",
        "below": "skipped",
        "alert": "succeeded",
        "other": "succeeded",
    }
    assert core.outcome() == "failed"


@pytest.mark.parametrize("run_if", ["success", "failure"])
def test_an_ignored_failure_passes(run_if) -> None:
    rules = [Rule("flaky", on_failure="ignore"), Rule("next", ("flaky",), run_if=run_if)]
    core, order = run(rules, {"flaky": "failed"})
    assert core.ignored("flaky") and core.passed("flaky")
    if run_if == "success":
        assert order == ["flaky", "next"]
    else:
        assert core.state("next") == "skipped"  # nothing failed that counts
    assert core.outcome() == "succeeded"


def test_always_runs_whatever_happened_and_a_failing_clean_up_fails_the_run() -> None:
    rules = [Rule("a", on_failure="continue"), Rule("clean", ("a",), run_if="always")]
    core, order = run(rules, {"a": "failed", "clean": "failed"})
    assert order == ["a", "clean"]
    assert core.outcome() == "failed"
    core, order = run(rules, {})
    assert order == ["a", "clean"] and core.outcome() == "succeeded"


def test_an_interrupt_starts_and_decides_nothing_more() -> None:
    rules = [Rule("a"), Rule("b", ("a",)), Rule("clean", ("a",), run_if="always")]
    core = Schedule(rules)
    core.begin()
    core.start(core.ready()[0])
    core.interrupt("SIGINT")
    core.finish("a", "failed")
    assert core.ready() == []
    assert states(core) == {"a": "failed", "b": "pending", "clean": "pending"}
    assert core.outcome() == "interrupted"
    assert sorted(core.unfinished) == ["b", "clean"]


def test_a_step_ended_by_a_stop_while_waiting_for_a_slot_may_not_start() -> None:
    core = Schedule([Rule("bad"), Rule("waiting")])
    core.begin()
    assert core.ready() == ["bad", "waiting"]
    core.start("bad")
    update = core.finish("bad", "failed")
    assert [(e.name, e.state) for e in update.ended] == [("waiting", "cancelled")]
    assert core.start("waiting") is False


def test_retries_after_a_stop_only_for_clean_up_steps() -> None:
    core = Schedule([Rule("bad"), Rule("flaky"), Rule("clean", ("bad",), run_if="always")])
    core.begin()
    for name in core.ready():
        core.start(name)
    assert core.may_retry("flaky")
    core.finish("bad", "failed")
    (clean,) = core.ready()
    core.start(clean)
    assert not core.may_retry("flaky") and core.may_retry("clean")
    core.interrupt("SIGTERM")
    assert not core.may_retry("clean")


def test_resume_keeps_succeeded_steps_and_rejudges_clean_up() -> None:
    rules = [
        Rule("load", on_failure="continue"),
        Rule("rollback", ("load",), run_if="failure"),
    ]
    # an earlier invocation: load failed, rollback ran; now load runs again and succeeds
    core, order = run(rules, {}, succeeded=())
    assert order == ["load"] and core.state("rollback") == "skipped"
    assert core.start_reason("rollback") == "run_if failure: no upstream failed"
    # a resume that keeps load as succeeded judges rollback at once
    core = Schedule(rules, succeeded=["load"])
    update = core.begin()
    assert [(e.name, e.state, e.reason) for e in update.ended] == [
        ("rollback", "skipped", NOTHING_FAILED)
    ]


def test_a_reattached_step_is_running_from_the_start() -> None:
    core = Schedule([Rule("a"), Rule("b", ("a",))], running=["a"])
    core.begin()
    assert core.ready() == []
    core.finish("a", "succeeded")
    assert core.ready() == ["b"]


def test_finish_of_a_step_not_running_is_a_bug() -> None:
    core = Schedule([Rule("a")])
    core.begin()
    with pytest.raises(ValueError, match="'a' is ready, not running"):
        core.finish("a", "succeeded")


def test_long_reasons_are_shortened() -> None:
    ups = [Rule(f"u{i}", on_failure="continue") for i in range(5)]
    core, _ = run([*ups, Rule("s", tuple(r.name for r in ups))], {r.name: "failed" for r in ups})
    assert core.state("s") == "skipped"
    rules = [*ups, Rule("f", tuple(r.name for r in ups), run_if="failure")]
    core = Schedule(rules)
    core.begin()
    for name in core.ready():
        core.start(name)
        core.finish(name, "failed")
    assert core.start_reason("f") == (
        "run_if failure: upstream u0 failed, u1 failed, u2 failed and 2 more"
    )


# -- random plans, random outcomes, random stops and interrupts ------------------------


def passes(core, rules, name) -> bool:
    """The plan format's definition, written apart from the core's."""
    state = core.state(name)
    return (
        state == "succeeded"
        or (state == "failed" and rules[name].on_failure == "ignore")
        or (state == "skipped" and rules[name].run_if == "failure")
    )


@st.composite
def plans(draw):
    count = draw(st.integers(1, 9))
    rules = []
    for index in range(count):
        ups = (
            tuple(f"s{u}" for u in sorted(draw(st.sets(st.integers(0, index - 1), max_size=3))))
            if index
            else ()
        )
        run_if = draw(st.sampled_from(["success", "failure", "always"])) if ups else "success"
        on_failure = draw(st.sampled_from(["stop", "continue", "ignore"]))
        rules.append(Rule(f"s{index}", ups, run_if, on_failure))
    return rules


@settings(max_examples=120, deadline=None)
@given(rules=plans(), rnd=st.randoms(use_true_random=False))
def test_invariants_on_random_plans(rules, rnd) -> None:
    by_name = {rule.name: rule for rule in rules}
    core = Schedule(rules)

    def passed_(name: str) -> bool:
        assert core.passed(name) == passes(core, by_name, name)
        return passes(core, by_name, name)

    core.begin()
    started: list[str] = []
    handed: list[str] = []
    running: list[str] = []
    stopped_before: set[str] = set()
    interrupted = False
    while True:
        handed += core.ready()
        choices = [("start", n) for n in handed] + [("finish", n) for n in running]
        if not interrupted:
            choices.append(("interrupt", None))
        if not choices or (choices == [("interrupt", None)]):
            break
        action, name = rnd.choice(choices)
        if action == "interrupt":
            if rnd.random() < 0.1:  # now and then
                core.interrupt("test")
                interrupted = True
            continue
        if action == "start":
            handed.remove(name)
            ok = core.start(name)
            if not ok:
                assert core.state(name) in FINAL_STATES or interrupted
                continue
            assert name not in started  # a step starts at most once
            rule = by_name[name]
            ups = [core.state(u) for u in rule.upstreams]
            assert all(s in FINAL_STATES for s in ups)  # judged on final states only
            passed = [passed_(u) for u in rule.upstreams]
            if rule.run_if == "success":
                assert all(passed)
                assert core.phase == "running"  # after a stop only failure/always start
            elif rule.run_if == "failure":
                assert not all(passed)
            if core.phase == "stopping":
                stopped_before.add(name)
            started.append(name)
            running.append(name)
        else:
            running.remove(name)
            core.finish(name, rnd.choice(["succeeded", "failed"]))
    final = core.states()
    if interrupted:
        assert core.outcome() == "interrupted"
        return
    assert all(state in FINAL_STATES for state in final.values()), final
    for name, rule in by_name.items():
        state = final[name]
        passed = [passed_(u) for u in rule.upstreams]
        if state == "cancelled":
            assert rule.run_if == "success" and core.phase == "stopping"
        if state == "skipped":
            assert name not in started
            if rule.run_if == "failure":
                assert all(passed)
            else:
                assert rule.run_if == "success" and not all(passed)
        if state in ("succeeded", "failed"):
            assert name in started
    failed = [n for n, s in final.items() if s == "failed" and by_name[n].on_failure != "ignore"]
    assert core.outcome() == ("failed" if failed else "succeeded")
    for name in stopped_before:
        assert by_name[name].run_if in ("failure", "always")
