"""What a resume takes over, decided on records alone: no journal, no API, no clock."""

from __future__ import annotations

from runbook.events import AttemptRecord, RunRecord, StepRecord
from runbook.run.reasons import TIMEOUT_REASON
from runbook.run.resume import left_running, take_over


def step(name: str, workflow: int, state="pending", *attempts: AttemptRecord, **kw) -> StepRecord:
    return StepRecord(name, workflow, 1, state=state, attempts=list(attempts), **kw)


def attempt(number=1, execution=None, state="triggering", ended=None) -> AttemptRecord:
    return AttemptRecord(number, 100.0, execution_id=execution, state=state, ended_at=ended)


def run_of(*steps: StepRecord) -> RunRecord:
    return RunRecord("p", 1, 4, {s.name: s for s in steps})


def resume(prior: RunRecord, new: RunRecord, upstreams=None, retrigger_unknown=False):
    ups = upstreams or {}
    return take_over(
        prior,
        new.steps,
        upstreams=lambda name: ups.get(name, ()),
        order=list(new.steps),
        retrigger_unknown=retrigger_unknown,
    )


def test_succeeded_steps_are_kept_and_changed_ones_run_as_new() -> None:
    prior = run_of(
        step("a", 1, "succeeded", attempt(execution=7, state="succeeded", ended=1.0)),
        step("b", 2, "succeeded", attempt(execution=8, state="succeeded", ended=1.0)),
    )
    new = run_of(step("a", 1), step("b", 99), step("c", 3))  # b's workflow changed
    resumed = resume(prior, new)
    assert resumed.kept == ("a",)
    assert set(resumed.carried) == {"a"}
    assert not resumed.reattach and not resumed.ambiguous


def test_an_attempt_that_succeeded_decides_even_if_the_step_did_not_end() -> None:
    prior = run_of(step("a", 1, "running", attempt(execution=7, state="succeeded", ended=1.0)))
    assert resume(prior, run_of(step("a", 1))).kept == ("a",)


def test_a_clean_up_step_is_kept_only_while_none_of_its_upstreams_runs_again() -> None:
    done = attempt(execution=7, state="succeeded", ended=1.0)
    prior = run_of(
        step("load", 1, "failed", attempt(execution=6, state="failed", ended=1.0)),
        step("report", 2, "succeeded", done),
        step("notify", 3, "succeeded", done),
    )
    new = run_of(
        step("load", 1),
        step("report", 2, run_if="always"),
        step("notify", 3, run_if="always"),
    )
    resumed = resume(prior, new, upstreams={"report": ("load",), "notify": ()})
    assert resumed.kept == ("notify",)  # report is judged again: load runs again


def test_executions_not_seen_to_end_are_polled_again_never_triggered() -> None:
    in_flight = attempt(execution=7, state="running")
    unpolled = attempt(execution=8, state="running", ended=2.0)  # the API could not be polled
    timed_out = attempt(execution=9, state="running", ended=2.0)
    prior = run_of(
        step("a", 1, "running", in_flight),
        step("b", 2, "failed", unpolled, reason="execution 8: the API is unavailable"),
        step("c", 3, "failed", timed_out, reason=TIMEOUT_REASON),
    )
    resumed = resume(prior, run_of(step("a", 1), step("b", 2), step("c", 3)))
    assert resumed.reattach == {"a": in_flight, "b": unpolled}  # c timed out: a policy


def test_an_unanswered_trigger_is_ambiguous_unless_the_user_says_retrigger() -> None:
    prior = run_of(
        step("a", 1, "running", attempt(number=2)),  # triggering, no id, not ended
        step("b", 2, "failed", attempt(state="unknown", ended=1.0)),
    )
    new = run_of(step("a", 1), step("b", 2))
    resumed = resume(prior, new)
    assert set(resumed.ambiguous) == {"a", "b"}
    assert resumed.ambiguous["a"].startswith("the trigger of attempt 2 got no answer")
    assert not resume(prior, new, retrigger_unknown=True).ambiguous


def test_take_over_changes_no_record() -> None:
    prior = run_of(step("a", 1, "succeeded", attempt(execution=7, state="succeeded", ended=1.0)))
    new = run_of(step("a", 1))
    resume(prior, new)
    assert new.steps["a"] == step("a", 1) and prior.steps["a"].state == "succeeded"


def test_left_running_names_what_a_new_run_would_duplicate() -> None:
    timed_out = attempt(execution=9, state="running", ended=2.0)
    run = run_of(
        step("a", 1, "pending", attempt(execution=7, state="running")),
        step("b", 2, "pending", attempt()),  # a trigger cut off unanswered
        step("c", 3, "failed", timed_out, reason=TIMEOUT_REASON),
        step("d", 4, "failed", attempt(state="not created", ended=2.0)),
        step("e", 5, "succeeded", attempt(execution=10, state="succeeded", ended=2.0)),
    )
    unseen, timed_out = left_running(run)
    assert [(s.name, e) for s, e in unseen] == [("a", 7), ("b", 0)]
    assert [(s.name, e) for s, e in timed_out] == [("c", 9)]
