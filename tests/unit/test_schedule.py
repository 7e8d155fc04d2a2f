"""The scheduler core: every rule of "Conditional steps", "Failure policies" and "Run
outcome", checked on examples and, with hypothesis, on random plans driven to random ends.

The core has no clock and no I/O: these tests drive it by hand, in microseconds.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runbook.conditions import Condition, is_cleanup
from runbook.schedule import FINAL_STATES, NOTHING_FAILED, Rule, Schedule

C = Condition.of


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


def test_steps_kept_together_are_counted_once_below() -> None:
    # a run under way, as its forecast presets it: load and the rollback below it both
    # ended (the rollback ran), report also waits for extract, which still runs
    rules = [
        Rule("load"),
        Rule("rollback", ("load",), run_if="failure"),
        Rule("extract"),
        Rule("report", ("load", "rollback", "extract")),
    ]
    core = Schedule(rules, succeeded=["load", "rollback"])
    update = core.begin()
    assert update.ended == ()  # the kept rollback is not skipped by load's end
    assert core.state("rollback") == "succeeded"
    assert core.ready() == ["extract"]  # report waits for extract
    assert core.start("extract")
    core.finish("extract", "succeeded")
    assert core.ready() == ["report"]


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


# -- conditions on named upstreams ---------------------------------------------------------


def rollback_plan(on_failure="stop"):
    """The rollback of a load: it runs only when the load ran and failed after the
    snapshot it restores was taken."""
    return [
        Rule("snapshot", on_failure=on_failure),
        Rule("load", ("snapshot",), on_failure=on_failure),
        Rule("restore", ("snapshot", "load"), C({"snapshot": "succeeded", "load": "failed"})),
        Rule("report", ("restore",)),
    ]


@pytest.mark.parametrize("on_failure", ["stop", "continue"])
def test_the_rollback_runs_only_when_the_load_ran_and_failed(on_failure) -> None:
    core, order = run(rollback_plan(on_failure), {"load": "failed"})
    # a stop still runs the clean-up step, and cancels the success step after it
    assert order == ["snapshot", "load", "restore"] + (
        ["report"] if on_failure == "continue" else []
    )
    assert core.start_reason("restore") == "run_if: snapshot succeeded, load failed"
    assert core.outcome() == "failed"


@pytest.mark.parametrize("on_failure", ["stop", "continue"])
def test_the_rollback_is_skipped_when_the_snapshot_failed_and_the_load_never_ran(
    on_failure,
) -> None:
    core = Schedule(rollback_plan(on_failure))
    core.begin()
    assert core.ready() == ["snapshot"]
    core.start("snapshot")
    update = core.finish("snapshot", "failed")
    ended = {e.name: (e.state, e.reason) for e in update.ended}
    assert ended["load"][0] == "skipped"
    # the first entry that cannot hold, in the mapping's order, names the reason
    assert ended["restore"] == ("skipped", "run_if: snapshot failed, not succeeded")
    # a clean-up step with nothing to clean up passed: the report after it runs
    assert core.passed("restore")
    assert core.state("report") == ("ready" if on_failure == "continue" else "cancelled")


def test_the_rollback_is_skipped_when_everything_succeeded() -> None:
    core, order = run(rollback_plan(), {})
    assert order == ["snapshot", "load", "report"]
    assert core.state("restore") == "skipped"
    assert core.outcome() == "succeeded"


def test_an_entry_decides_as_soon_as_its_upstream_ends_though_others_run() -> None:
    rules = [Rule("a"), Rule("b"), Rule("m", ("a", "b"), C({"a": "failed"}))]
    core = Schedule(rules)
    core.begin()
    assert core.ready() == ["a", "b"]
    core.start("a")
    core.start("b")
    update = core.finish("a", "succeeded")
    assert [(e.name, e.state, e.reason) for e in update.ended] == [
        ("m", "skipped", "run_if: a succeeded, not failed")
    ]
    # while an entry holds, the step waits for every upstream, named or not
    core = Schedule([Rule("a", on_failure="continue"), Rule("b"), *rules[2:]])
    core.begin()
    assert core.ready() == ["a", "b"]
    core.start("a")
    core.start("b")
    core.finish("a", "failed")
    assert core.ready() == []
    core.finish("b", "failed")
    assert core.ready() == ["m"]


def test_a_list_accepts_any_of_its_outcomes_and_cancelled_counts_as_skipped() -> None:
    either = C({"a": ["failed", "skipped"]})
    core, order = run(
        [Rule("a", on_failure="continue"), Rule("n", ("a",), either)], {"a": "failed"}
    )
    assert order == ["a", "n"]
    # a stop cancels the success step "a2"; to its mapping, that is "skipped"
    either = C({"a2": ["failed", "skipped"]})
    rules = [Rule("bad"), Rule("a2", ("up",)), Rule("up"), Rule("n", ("a2",), either)]
    core = Schedule(rules)
    core.begin()
    assert core.ready() == ["bad", "up"]
    core.start("bad")
    core.start("up")
    core.finish("bad", "failed")
    assert core.state("a2") == "cancelled"
    assert core.ready() == ["n"]  # a clean-up step: it still starts during the stop


def test_failed_covers_an_ignored_failure_and_passed_covers_it_too() -> None:
    for accepted in ("failed", "passed"):
        rules = [Rule("a", on_failure="ignore"), Rule("n", ("a",), C({"a": accepted}))]
        core, order = run(rules, {"a": "failed"})
        assert order == ["a", "n"], accepted
    core, order = run([Rule("a"), Rule("n", ("a",), C({"a": "failed"}))], {})
    assert core.state("n") == "skipped" and core.passed("n")  # a clean-up: nothing to do


def test_a_mapping_that_accepts_only_success_is_no_clean_up_step() -> None:
    rules = [Rule("bad"), Rule("slow"), Rule("n", ("slow",), C({"slow": "passed"}))]
    core = Schedule(rules)
    core.begin()
    core.start("bad")
    core.start("slow")
    update = core.finish("bad", "failed")
    # a stop ends it at once, as it ends a success step: its entry may still hold
    assert [(e.name, e.state) for e in update.ended] == [("n", "cancelled")]
    assert not core.passed("n")
    assert not core.may_retry("slow") and core.may_retry("bad") is False


def test_an_unselected_upstream_counts_as_succeeded() -> None:
    rules = [Rule("b"), Rule("n", ("b",), C({"a": "succeeded", "b": "succeeded"}))]
    core, order = run(rules, {})
    assert order == ["b", "n"]
    core = Schedule([Rule("b"), Rule("n", ("b",), C({"a": "failed"}))])
    update = core.begin()
    assert [(e.name, e.reason) for e in update.ended] == [
        ("n", "run_if: a not selected (counts as succeeded), not failed")
    ]


# -- random plans, random outcomes, random stops and interrupts ------------------------


def passes(core, rules, name) -> bool:
    """The plan format's definition, written apart from the core's."""
    state, run_if = core.state(name), rules[name].run_if
    cleanup = run_if in ("failure", "always") or (
        isinstance(run_if, Condition)
        and any(set(a) & {"failed", "skipped"} for _, a in run_if.entries)
    )
    return (
        state == "succeeded"
        or (state == "failed" and rules[name].on_failure == "ignore")
        or (state == "skipped" and cleanup)
    )


def holds(core, rules, entry) -> bool:
    """Whether an upstream's final state is one an entry accepts, written apart too."""
    name, accepted = entry
    state = core.state(name)
    return (
        (state == "succeeded" and "succeeded" in accepted)
        or (state == "failed" and "failed" in accepted)
        or (state in ("skipped", "cancelled") and "skipped" in accepted)
        or ("passed" in accepted and passes(core, rules, name))
    )


@st.composite
def conditions(draw, ups):
    """A random mapping over some of ``ups``, each entry one outcome or a list."""
    named = draw(st.lists(st.sampled_from(ups), min_size=1, max_size=len(ups), unique=True))
    outcomes = st.sampled_from(["succeeded", "failed", "skipped", "passed"])
    mapping = {}
    for name in named:
        if draw(st.booleans()):
            mapping[name] = draw(outcomes)
        else:
            mapping[name] = draw(st.lists(outcomes, min_size=1, max_size=3, unique=True))
    return Condition.of(mapping)


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
        run_if = (
            draw(st.sampled_from(["success", "failure", "always", "map"])) if ups else "success"
        )
        if run_if == "map":
            run_if = draw(conditions(list(ups)))
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
                assert core.phase == "running"  # after a stop only clean-up steps start
            elif rule.run_if == "failure":
                assert not all(passed)
            elif isinstance(rule.run_if, Condition):
                # a mapping starts only when every entry holds on final upstream states
                assert all(holds(core, by_name, entry) for entry in rule.run_if.entries)
                assert core.phase == "running" or is_cleanup(rule.run_if)
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
            assert not is_cleanup(rule.run_if) and core.phase == "stopping"
        if state == "skipped":
            assert name not in started
            if rule.run_if == "failure":
                assert all(passed)
            elif isinstance(rule.run_if, Condition):
                assert not all(holds(core, by_name, entry) for entry in rule.run_if.entries)
            else:
                assert rule.run_if == "success" and not all(passed)
        if state in ("succeeded", "failed"):
            assert name in started
    failed = [n for n, s in final.items() if s == "failed" and by_name[n].on_failure != "ignore"]
    assert core.outcome() == ("failed" if failed else "succeeded")
    for name in stopped_before:
        assert is_cleanup(by_name[name].run_if)
