"""The plan's rules as an exported DAG carries them (runbook.airflow.rules), without
Airflow: on examples, and, with hypothesis, against the scheduler ``apply`` uses.

The property test runs each random plan twice, one step at a time as ``airflow dags
test`` does: once through :class:`runbook.schedule.Schedule`, once through a model of
Airflow's trigger rules (all_success: upstream_failed under a failed upstream, skipped
under a skipped one; all_done: wait for every upstream) plus the operator's run-time
judgement. Both must end every step alike and the run alike.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runbook.airflow import rules
from runbook.airflow.rules import Policy, Record
from runbook.errors import ConfigError
from runbook.schedule import NOTHING_FAILED, Rule, Schedule

from .test_schedule import plans


def test_passed_reads_airflow_states_as_the_plan_does() -> None:
    assert rules.passed("success", Policy())
    assert not rules.passed("failed", Policy())
    assert rules.passed("failed", Policy(on_failure="ignore"))
    assert not rules.passed("upstream_failed", Policy(on_failure="ignore"))
    assert rules.passed("skipped", Policy(run_if="failure"))  # skipped: nothing failed
    assert not rules.passed("skipped", Policy())
    assert not rules.passed(None, Policy())


def test_trigger_rule_is_all_success_only_where_airflow_success_means_passed() -> None:
    plain = Policy()
    assert rules.trigger_rule(plain, [plain, Policy(run_if="always")]) == "all_success"
    assert rules.trigger_rule(plain, [Policy(on_failure="ignore")]) == "all_done"
    assert rules.trigger_rule(plain, [Policy(run_if="failure")]) == "all_done"
    assert rules.trigger_rule(Policy(run_if="failure"), [plain]) == "all_done"
    assert rules.trigger_rule(Policy(run_if="always"), [plain]) == "all_done"
    assert rules.trigger_rule(plain, []) == "all_success"


def test_judge_gives_the_reasons_apply_gives() -> None:
    ups = {"load": Policy(), "side": Policy(on_failure="ignore")}
    both_ok = {"load": "success", "side": "failed"}
    assert rules.judge(Policy(), ups, both_ok, None) is None
    verdict = rules.judge(Policy(), ups, {"load": "upstream_failed", "side": "success"}, None)
    assert verdict == rules.Verdict("skipped", "upstream load did not succeed")
    stop = "step x failed (on_failure: stop)"
    assert rules.judge(Policy(), ups, both_ok, stop) == rules.Verdict(
        "cancelled", f"not started: {stop}"
    )
    rollback = Policy(run_if="failure")
    assert rules.judge(rollback, ups, both_ok, stop) == rules.Verdict("skipped", NOTHING_FAILED)
    assert rules.judge(rollback, ups, {"load": "failed", "side": "success"}, stop) is None
    assert rules.judge(Policy(run_if="always"), ups, {}, stop) is None
    many = {f"s{i}": Policy() for i in range(5)}
    verdict = rules.judge(Policy(), many, {}, None)
    assert verdict is not None
    assert verdict.reason == "upstream s0, s1, s2 and 2 more did not succeed"


def test_start_reason_names_what_did_not_pass() -> None:
    ups = {"load": Policy(), "feed": Policy(), "a": Policy(), "b": Policy()}
    states = {"load": "failed", "feed": "upstream_failed", "a": "failed", "b": "failed"}
    assert rules.start_reason(Policy(run_if="failure"), ups, states) == (
        "run_if failure: upstream load failed, feed skipped, a failed and 1 more"
    )
    assert rules.start_reason(Policy(run_if="always"), {"load": Policy()}, {"load": "success"}) == (
        "run_if always: every upstream has ended"
    )


def test_a_mapping_is_judged_at_run_time_as_apply_judges_it() -> None:
    restore = Policy(rules.run_if({"snapshot": "succeeded", "load": "failed"}))
    ups = {"snapshot": Policy(), "load": Policy()}
    stop = "step load failed (on_failure: stop)"
    ran_and_failed = {"snapshot": "success", "load": "failed"}
    assert rules.judge(restore, ups, ran_and_failed, stop) is None  # a clean-up: it starts
    assert rules.start_reason(restore, ups, ran_and_failed) == (
        "run_if: snapshot succeeded, load failed"
    )
    never_ran = {"snapshot": "failed", "load": "upstream_failed"}
    assert rules.judge(restore, ups, never_ran, stop) == rules.Verdict(
        "skipped", "run_if: snapshot failed, not succeeded"
    )
    assert rules.passed("skipped", restore)  # nothing to clean up: it passed
    # a mapping that needs success is cancelled by a stop, like a success step
    after = Policy(rules.run_if({"snapshot": ["succeeded", "passed"]}))
    assert rules.judge(after, ups, ran_and_failed, stop) == rules.Verdict(
        "cancelled", f"not started: {stop}"
    )
    assert rules.trigger_rule(restore, ups.values()) == "all_done"
    assert rules.trigger_rule(Policy(), [restore]) == "all_done"  # its skip may pass
    assert rules.trigger_rule(Policy(), [after]) == "all_success"  # its skip never does


@pytest.mark.parametrize(
    "value", ["sometimes", {}, {"a": []}, {"a": "done"}, {"a": ["failed", "failed"]}, 3]
)
def test_a_run_if_the_dag_file_cannot_mean_is_an_import_error(value: object) -> None:
    with pytest.raises(ValueError, match="neither success, failure nor always"):
        rules.run_if(value)


def test_stopped_by_and_failures() -> None:
    policies = {"a": Policy(), "b": Policy(on_failure="continue"), "c": Policy(on_failure="ignore")}
    assert rules.stopped_by(policies, {"b": "failed", "c": "failed"}) is None
    assert rules.stopped_by(policies, {"a": "failed"}) == "step a failed (on_failure: stop)"
    assert rules.failures(policies, {"a": "success", "b": "failed", "c": "failed"}) == (
        ["b"],
        ["c"],
    )


def test_a_record_round_trips_through_the_store_and_rejects_foreign_values() -> None:
    record = Record("triggering").triggering(now=1000.0)
    assert record.ambiguous and not record.live
    live = record.triggered(42, "created")
    assert live.live and live.executions == (42,) and live.triggered_at == 1000.0
    assert Record.load(live.dump()) == live
    again = live.ended("failed").triggering(now=2000.0).triggered(43, "running")
    assert again.executions == (42, 43) and again.state == "running"
    assert not again.ended("succeeded").live
    assert Record.load(None) is None
    assert Record.load({"state": "bogus"}) is None
    assert Record.load("running") is None
    odd = Record.load({"state": "running", "execution_id": True, "executions": [1, "x"]})
    assert odd == Record("running", None, None, (1,)) and not odd.live


def test_base_url_from_a_connection() -> None:
    url = "https://app.nexadata.com/api/v1"
    assert rules.base_url(url, None, None, None) == url
    assert rules.base_url(" api.example.test ", None, 8443, None) == "https://api.example.test:8443"
    assert rules.base_url("127.0.0.1:9", "http", 80, None) == "http://127.0.0.1:9"
    assert rules.base_url("", None, None, url) == url
    with pytest.raises(ConfigError, match="has no host"):
        rules.base_url(None, None, None, None)


# -- the same outcomes as apply, on random plans ---------------------------------------


def _schedule(plan: list[Rule], endings: dict[str, str]) -> tuple[dict[str, str], str, list[str]]:
    """apply's scheduler, one step at a time: final states, outcome, decision order."""
    core = Schedule(plan)
    order: list[str] = [ended.name for ended in core.begin().ended]
    queue: list[str] = []
    while True:
        queue += core.ready()
        if not queue:
            break
        name = queue.pop(0)
        if not core.start(name):
            continue
        order.append(name)
        update = core.finish(name, "failed" if endings.get(name) == "failed" else "succeeded")
        order += [ended.name for ended in update.ended]
    return dict(core.states()), core.outcome(), order


def _airflow(plan: list[Rule], endings: dict[str, str], order: list[str]) -> dict[str, str]:
    """Airflow's trigger rules plus the operator's judgement, one task at a time, taking
    the first task in ``order`` that Airflow could decide."""
    by_name = {rule.name: rule for rule in plan}
    policies = {rule.name: Policy(rule.run_if, rule.on_failure) for rule in plan}
    states: dict[str, str] = {}
    pending = [name for name in order if name in by_name]
    pending += [name for name in by_name if name not in pending]
    while pending:
        for name in pending:
            rule = by_name[name]
            ups = {up: policies[up] for up in rule.upstreams}
            trigger = rules.trigger_rule(policies[name], ups.values())
            seen = [states.get(up) for up in rule.upstreams]
            if trigger == "all_success" and any(s in ("failed", "upstream_failed") for s in seen):
                states[name] = "upstream_failed"
            elif trigger == "all_success" and "skipped" in seen:
                states[name] = "skipped"
            elif all(s is not None for s in seen):
                stop = rules.stopped_by(policies, states)
                if rules.judge(policies[name], ups, states, stop) is not None:
                    states[name] = "skipped"
                else:
                    states[name] = "failed" if endings.get(name) == "failed" else "success"
            else:
                continue
            pending.remove(name)
            break
        else:  # pragma: no cover - a DAG always has a task Airflow can decide
            raise AssertionError(f"stuck with {pending}")
    return states


AS_PLAN = {"success": "succeeded", "failed": "failed", "upstream_failed": "skipped"}


@settings(max_examples=300, deadline=None)
@given(plan=plans(), data=st.data())
def test_airflow_ends_every_step_as_apply_does(plan: list[Rule], data: st.DataObject) -> None:
    endings = {
        rule.name: data.draw(st.sampled_from(["succeeded", "failed"]), label=rule.name)
        for rule in plan
    }
    expected, outcome, order = _schedule(plan, endings)
    got = _airflow(plan, endings, order)
    assert {n: AS_PLAN.get(s, "skipped") for n, s in got.items()} == {
        n: "skipped" if s == "cancelled" else s for n, s in expected.items()
    }
    policies = {rule.name: Policy(rule.run_if, rule.on_failure) for rule in plan}
    failed, _ = rules.failures(policies, got)
    assert (outcome == "failed") == bool(failed)
