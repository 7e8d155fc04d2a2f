"""Conditions on named upstreams end to end: ``runbook apply`` against a sandbox on real
loopback, one test per row of the outcome table and per rule of the plan format's
"Conditions on named upstreams", and each place a mapping ``run_if`` is shown.

Every test says what ran by the sandbox's own count of executions, so a rollback that
ran when it should not (or did not when it should) fails it.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

import pytest

from runbook.sandbox.scenario import Faults, Scenario
from tests.support.night import executions, steps_of, write

FAST = {"queue": 0.0, "duration": 0.05}
ROLLBACK = """\
version: 1
name: r
defaults: {{poll_interval: 20ms, max_poll_interval: 50ms, on_failure: {policy}}}
workflows:
  snapshot: {{workflow_id: 1}}
  load: {{workflow_id: 2, depends_on: snapshot}}
  restore:
    workflow_id: 3
    depends_on: [snapshot, load]
    run_if: {{snapshot: succeeded, load: failed}}
  report: {{workflow_id: 4, depends_on: load}}
"""


def failed(*workflows: int, **behaviour: object) -> Scenario:
    return Scenario(
        default=FAST,
        workflows={w: {"outcome": "failed", "errors": ("bad",), **behaviour} for w in workflows},
    )


# -- the rollback: only when the load ran and failed --------------------------------------


@pytest.mark.parametrize("policy", ["stop", "continue"])
@pytest.mark.parametrize(
    ("case", "scenario", "ran", "restore", "code"),
    [
        ("load failed", failed(2), {"1": 1, "2": 1, "3": 1}, ("succeeded", None), 1),
        (
            "snapshot failed",
            failed(1),
            {"1": 1},
            ("skipped", "run_if: snapshot failed, not succeeded"),
            1,
        ),
        (
            "all succeeded",
            Scenario(default=FAST),
            {"1": 1, "2": 1, "4": 1},
            ("skipped", "run_if: load succeeded, not failed"),
            0,
        ),
    ],
)
def test_the_rollback_runs_exactly_when_the_load_ran_and_failed(
    cli, api, tmp_path, policy, case, scenario, ran, restore, code
) -> None:
    app = api(scenario)
    plan = write(tmp_path, ROLLBACK.format(policy=policy))
    report = tmp_path / "r.json"
    result = cli("apply", str(plan), "--report", str(report))
    assert result.code == code, result.out + result.err
    assert executions(app) == ran, case
    steps = steps_of(report)
    assert (steps["restore"]["state"], steps["restore"]["reason"]) == restore
    if restore[0] == "succeeded":
        assert "restore (workflow 3): starting: run_if: snapshot succeeded, load failed" in (
            result.out
        )
    else:
        assert f"restore (workflow 3): skipped: {restore[1]}" in result.out
    # the report's effective run_if is the mapping as written
    assert steps["restore"]["run_if"] == {"snapshot": "succeeded", "load": "failed"}


def test_a_skipped_rollback_passed_and_what_waits_for_it_runs(cli, api, tmp_path) -> None:
    app = api(failed(1))
    plan = write(
        tmp_path,
        ROLLBACK.format(policy="continue")
        + "  after_restore: {workflow_id: 5, depends_on: restore}\n",
    )
    result = cli("apply", str(plan))
    assert result.code == 1
    assert executions(app) == {"1": 1, "5": 1}  # nothing to clean up: it passed


# -- the outcome table ----------------------------------------------------------------------

TABLE = """\
version: 1
name: t
defaults: {{poll_interval: 20ms, max_poll_interval: 50ms}}
workflows:
  load: {{workflow_id: 1{load}}}
  on_failed: {{workflow_id: 2, depends_on: load, run_if: {{load: failed}}}}
  on_passed: {{workflow_id: 3, depends_on: load, run_if: {{load: passed}}}}
  on_succeeded: {{workflow_id: 4, depends_on: load, run_if: {{load: succeeded}}}}
  on_skipped: {{workflow_id: 5, depends_on: load, run_if: {{load: skipped}}}}
"""


@pytest.mark.parametrize(
    ("case", "load", "scenario", "ran", "reason"),
    [
        ("an execution that failed", "", failed(1), {"2"}, "execution 1 failed"),
        (
            "a timed-out step",
            ", timeout: 200ms",
            Scenario(default=FAST, workflows={1: {"duration": 30.0}}),
            {"2"},
            "timed out",
        ),
        (
            "a trigger refused for good",
            "",
            Scenario(default=FAST, workflows={1: {"exists": False}}),
            {"2"},
            "not found",
        ),
        (
            "an ignored failure: failed, and passed too",
            ", on_failure: ignore",
            failed(1),
            {"2", "3"},
            "execution 1 failed",
        ),
        ("a success", "", Scenario(default=FAST), {"3", "4"}, None),
    ],
)
def test_each_outcome_is_what_the_upstream_ended_with(
    cli, api, tmp_path, case, load, scenario, ran, reason
) -> None:
    app = api(scenario)
    plan = write(tmp_path, TABLE.format(load=load))
    report = tmp_path / "r.json"
    result = cli("apply", str(plan), "--report", str(report))
    started = set(executions(app)) - {"1"}
    assert started == ran, f"{case}: {result.out}"
    steps = steps_of(report)
    if reason is not None:
        assert steps["load"]["state"] == "failed" and reason in steps["load"]["reason"]
    for name, workflow in (("on_failed", "2"), ("on_passed", "3"), ("on_succeeded", "4")):
        if workflow not in ran:
            assert steps[name]["state"] == "skipped"
            assert steps[name]["reason"].startswith(f"run_if: load {steps['load']['state']}, not")
    assert steps["on_skipped"]["state"] == "skipped"


def test_a_trigger_whose_outcome_is_unknown_counts_as_failed(cli, api, tmp_path) -> None:
    app = api(Scenario(default=FAST, faults=Faults(lost_answer_rate=1.0), seed=1))
    plan = write(tmp_path, TABLE.format(load=""))
    report = tmp_path / "r.json"
    result = cli("apply", str(plan), "--report", str(report))
    assert result.code == 1
    steps = steps_of(report)
    assert steps["load"]["reason"].startswith("trigger outcome unknown")
    # started on its mapping (its own trigger's answer is lost as well)
    assert steps["on_failed"]["attempts"]
    assert "on_failed (workflow 2): starting: run_if: load failed" in result.out
    assert not steps["on_succeeded"]["attempts"] and not steps["on_passed"]["attempts"]
    assert set(executions(app)) == {"1", "2"}


def test_a_cancelled_upstream_is_skipped_and_a_list_accepts_any_outcome(cli, api, tmp_path) -> None:
    # one slot: "bad" starts first (by name), fails, and the stop cancels "other", which
    # waited for the slot; "notify" takes a skipped or failed "other"
    plan = write(
        tmp_path,
        "version: 1\nname: k\nmax_parallel: 1\n"
        "defaults: {poll_interval: 20ms, max_poll_interval: 50ms}\n"
        "workflows:\n"
        "  bad: {workflow_id: 1}\n"
        "  other: {workflow_id: 2}\n"
        "  notify: {workflow_id: 3, depends_on: other, run_if: {other: [failed, skipped]}}\n"
        "  only_if_ran: {workflow_id: 4, depends_on: other, run_if: {other: succeeded}}\n",
    )
    app = api(failed(1))
    report = tmp_path / "r.json"
    result = cli("apply", str(plan), "--report", str(report))
    assert result.code == 1
    steps = steps_of(report)
    assert steps["other"]["state"] == "cancelled"
    assert executions(app) == {"1": 1, "3": 1}
    assert steps["notify"]["run_if"] == {"other": ["failed", "skipped"]}
    assert (steps["only_if_ran"]["state"], steps["only_if_ran"]["reason"]) == (
        "skipped",
        "run_if: other cancelled, not succeeded",
    )


def test_a_finally_step_may_name_its_implicit_upstreams(cli, api, tmp_path) -> None:
    text = (
        "version: 1\nname: f\n"
        "defaults: {poll_interval: 20ms, max_poll_interval: 50ms, on_failure: continue}\n"
        "finally: [unlock]\n"
        "workflows:\n"
        "  lock: {workflow_id: 1}\n"
        "  load: {workflow_id: 2}\n"
        "  unlock: {workflow_id: 9, run_if: {lock: succeeded}}\n"
    )
    plan = write(tmp_path, text)
    app = api(failed(2))
    assert cli("apply", str(plan)).code == 1
    assert executions(app) == {"1": 1, "2": 1, "9": 1}  # the lock was taken: release it
    app = api(failed(1))
    result = cli("apply", str(plan), "--new-run")
    assert result.code == 1
    assert executions(app) == {"1": 1, "2": 1}  # no lock, nothing to release
    assert "unlock (workflow 9): skipped: run_if: lock failed, not succeeded" in result.out
    # graph draws the edge from the named implicit upstream, with its outcome
    dot = cli("graph", str(plan)).out
    assert '"lock" -> "unlock" [style=dashed, label="succeeded"];' in dot
    assert '"load" -> "unlock" [style=dashed, label="finally"];' in dot


def test_resume_judges_the_mapping_again(cli, api, tmp_path) -> None:
    plan = write(tmp_path, ROLLBACK.format(policy="continue"))
    app = api(Scenario(default=FAST, workflows={2: {"fail_first": 1}}))
    first = cli("apply", str(plan))
    assert first.code == 1
    assert executions(app) == {"1": 1, "2": 1, "3": 1}  # the load failed: rolled back
    report, junit = tmp_path / "r.json", tmp_path / "j.xml"
    resumed = cli("apply", str(plan), "--resume", "--report", str(report), "--junit", str(junit))
    assert resumed.code == 0, resumed.out
    assert executions(app) == {"1": 1, "2": 2, "3": 1, "4": 1}  # snapshot kept, load again
    restore = steps_of(report)["restore"]
    assert (restore["state"], restore["reason"]) == (
        "skipped",
        "run_if: load succeeded, not failed",
    )
    assert [a["state"] for a in restore["attempts"]] == ["succeeded"]  # the earlier one stays
    case = next(c for c in ET.parse(junit).getroot().iter("testcase") if c.get("name") == "restore")
    assert case.find("skipped").get("message") == "skipped: run_if: load succeeded, not failed"
    status = cli("status")
    assert re.search(
        r"SKIPPED   restore \(workflow 3, run_if \{snapshot: succeeded, load: failed\}\)"
        r"( in \S+)?: run_if: load succeeded, not failed",
        status.out,
    )


# -- what shows it, and what checks it --------------------------------------------------------


def test_plan_and_graph_show_the_mapping(cli, tmp_path) -> None:
    plan = write(
        tmp_path, ROLLBACK.format(policy="stop").replace("load: failed", "load: [failed, skipped]")
    )
    text = cli("plan", str(plan)).out
    assert re.search(r"restore +3 +\{snapshot: succeeded, load: \[failed, skipped\]\} +stop", text)
    document = json.loads(cli("plan", str(plan), "--format", "json").out)
    restore = next(s for stage in document["stages"] for s in stage if s["name"] == "restore")
    assert restore["run_if"] == {"snapshot": "succeeded", "load": ["failed", "skipped"]}
    dot = cli("graph", str(plan)).out
    assert '"load" -> "restore" [style=dashed, label="failed|skipped"];' in dot
    assert '"snapshot" -> "restore" [style=dashed, label="succeeded"];' in dot
    assert "from an upstream a run_if mapping names" in dot
    mermaid = cli("graph", str(plan), "--format", "mermaid").out
    assert 'load -.->|"failed|skipped"| restore' in mermaid
    assert "snapshot -.->|succeeded| restore" in mermaid


def test_validate_warns_of_a_failure_step_that_fires_on_a_skip(cli, tmp_path) -> None:
    plan = write(
        tmp_path,
        "version: 1\nworkflows:\n"
        "  snapshot: {workflow_id: 1}\n"
        "  load: {workflow_id: 2, depends_on: snapshot}\n"
        "  restore: {workflow_id: 3, depends_on: [snapshot, load], run_if: failure}\n"
        "  alert: {workflow_id: 4, depends_on: snapshot, run_if: failure}\n",
    )
    result = cli("validate", str(plan))
    assert result.code == 0
    assert result.out == f"{plan}: ok (4 workflows, 4 dependencies)\n"
    assert result.err == (
        f"{plan}:5:67: warning: workflows.restore.run_if: run_if failure also holds when "
        "'load' was skipped because a step before it failed (it never ran); to run only "
        "when a step that ran failed, name the outcomes, e.g. run_if: "
        "{snapshot: succeeded, load: failed}\n"
    )
    # with the mapping the warning goes; a failure step whose upstream cannot be skipped
    # ("alert": snapshot has no upstream) never had one
    fixed = plan.read_text().replace(
        "run_if: failure}\n  alert", "run_if: {snapshot: succeeded, load: failed}}\n  alert"
    )
    plan.write_text(fixed)
    assert cli("validate", str(plan)).err == ""


def test_a_mapping_that_names_no_upstream_sends_nothing(cli, api, tmp_path) -> None:
    app = api(Scenario(default=FAST))
    plan = write(
        tmp_path,
        "version: 1\nworkflows:\n"
        "  load: {workflow_id: 1}\n"
        "  other: {workflow_id: 2}\n"
        "  restore: {workflow_id: 3, depends_on: load, run_if: {lod: failed, other: faild}}\n",
    )
    result = cli("apply", str(plan))
    assert result.code == 2
    assert result.err == (
        f"{plan}:5:56: workflows.restore.run_if: unknown step 'lod'; did you mean 'load'?\n"
        f"{plan}:5:69: workflows.restore.run_if: 'other' is not an upstream of 'restore': "
        "add it to depends_on\n"
        f"{plan}:5:76: workflows.restore.run_if.other: 'faild' must be an outcome (succeeded, "
        "failed, skipped or passed) or a list of them; did you mean 'failed'?\n"
        f"{plan}: invalid plan (3 problems)\n"
    )
    assert app.state.sandbox.stats()["requests_total"] == 0
