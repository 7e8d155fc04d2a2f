"""Clean-up, rollback and alert steps end to end: ``runbook apply`` against a sandbox on
real loopback, one test per rule of "Conditional steps" and "Run outcome".

The sandbox runs in this process and outlives every apply (and every killed or
interrupted process), so its counters say which workflows really ran, and how often.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from runbook.sandbox.scenario import Scenario
from tests.support.entry import entry_point
from tests.support.night import executions, steps_of, write

FAST = {"queue": 0.0, "duration": 0.05}
PLAN = """\
version: 1
name: c
defaults: {poll_interval: 20ms, max_poll_interval: 50ms, retry_delay: 10ms}
finally: [release]
workflows:
  extract: {workflow_id: 1}
  load: {workflow_id: 2, depends_on: extract}
  rollback: {workflow_id: 3, depends_on: load, run_if: failure}
  report: {workflow_id: 4, depends_on: load}
  release: {workflow_id: 9}
"""


@pytest.fixture
def plan(tmp_path: Path) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(PLAN)
    return path


def test_a_failure_runs_the_rollback_and_finally_and_the_run_still_fails(
    cli, api, plan, tmp_path
) -> None:
    app = api(Scenario(default=FAST, workflows={2: {"outcome": "failed", "errors": ("bad",)}}))
    report = tmp_path / "r.json"
    result = cli("apply", str(plan), "--report", str(report))
    assert result.code == 1, result.out + result.err
    assert executions(app) == {"1": 1, "2": 1, "3": 1, "9": 1}
    assert re.search(
        r"rollback \(workflow 3\): starting: run_if failure: upstream load failed", result.out
    )
    assert re.search(
        r"release \(workflow 9\): starting: run_if always: every upstream has ended "
        r"\(upstream load failed, report skipped\)",
        result.out,
    )
    assert "report (workflow 4): skipped: upstream load did not succeed" in result.out
    summary = result.out[result.out.index("Run 1 of c") :]
    assert summary.startswith("Run 1 of c failed in ")
    assert ": 3 succeeded, 1 failed, 1 skipped\n" in summary
    steps = steps_of(report)
    assert {name: step["state"] for name, step in steps.items()} == {
        "extract": "succeeded",
        "load": "failed",
        "rollback": "succeeded",
        "report": "skipped",
        "release": "succeeded",
    }
    # the effective policies: defaults and finally applied
    assert (steps["release"]["run_if"], steps["release"]["on_failure"]) == ("always", "stop")
    assert (steps["rollback"]["run_if"], steps["load"]["run_if"]) == ("failure", "success")
    assert json.loads(report.read_text())["state"] == "failed"


def test_nothing_failed_the_rollback_is_skipped_and_the_run_succeeds(
    cli, api, plan, tmp_path
) -> None:
    app = api(Scenario(default=FAST))
    junit = tmp_path / "j.xml"
    result = cli("apply", str(plan), "--junit", str(junit), "--log-format", "json")
    assert result.code == 0, result.out + result.err
    assert executions(app) == {"1": 1, "2": 1, "4": 1, "9": 1}
    events = [json.loads(line) for line in result.out.splitlines()]
    rollback = next(e for e in events if e["event"] == "step_finished" and e["step"] == "rollback")
    assert (rollback["state"], rollback["reason"], rollback["run_if"]) == (
        "skipped",
        "run_if failure: no upstream failed",
        "failure",
    )
    notices = [e["message"] for e in events if e["event"] == "notice"]
    assert notices == ["starting: run_if always: every upstream has ended"]
    assert events[-1]["counts"] == {"succeeded": 4, "skipped": 1}
    suite = ET.parse(junit).getroot()
    assert (suite.get("failures"), suite.get("skipped")) == ("0", "1")


def test_a_stop_cancels_at_once_and_the_rollback_waits_for_the_execution_in_flight(
    cli, api, tmp_path
) -> None:
    plan = write(
        tmp_path,
        "version: 1\nname: s\n"
        "defaults: {poll_interval: 20ms, max_poll_interval: 50ms}\n"
        "workflows:\n"
        "  bad: {workflow_id: 5}\n"
        "  slow: {workflow_id: 6}\n"
        "  after_slow: {workflow_id: 8, depends_on: slow}\n"
        "  undo_slow: {workflow_id: 7, depends_on: slow, run_if: failure}\n",
    )
    app = api(
        Scenario(
            default=FAST,
            workflows={
                5: {"outcome": "failed", "duration": 0.02},
                6: {"outcome": "failed", "duration": 0.6},
            },
        )
    )
    result = cli("apply", str(plan), "--log-format", "json")
    assert result.code == 1
    events = [json.loads(line) for line in result.out.splitlines()]

    def index(event: str, step: str) -> int:
        return next(
            i for i, e in enumerate(events) if e["event"] == event and e.get("step") == step
        )

    cancelled = index("step_finished", "after_slow")
    assert events[cancelled]["state"] == "cancelled"
    assert events[cancelled]["reason"] == "not started: step bad failed (on_failure: stop)"
    # cancelled at the stop, while slow was still running; undo_slow waited for slow
    assert index("step_finished", "bad") < cancelled < index("step_finished", "slow")
    assert index("step_finished", "slow") < index("attempt_triggering", "undo_slow")
    assert events[index("step_finished", "undo_slow")]["state"] == "succeeded"
    assert executions(app) == {"5": 1, "6": 1, "7": 1}


def test_an_interrupt_starts_no_clean_up_and_resume_runs_it(cli, api, plan, tmp_path) -> None:
    app = api(Scenario(default=FAST, workflows={2: {"outcome": "failed", "duration": 1.0}}))
    process = subprocess.Popen(
        [*entry_point(), "apply", str(plan)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    for line in process.stdout:
        if "load (workflow 2, execution" in line:
            break
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert "starting: run_if" not in out  # the clean-up steps did not start
    assert re.search(r"PENDING +rollback +workflow 3: not started: the run was interrupted", out)
    assert re.search(r"PENDING +release +workflow 9: not started: the run was interrupted", out)
    assert executions(app) == {"1": 1, "2": 1}

    report = tmp_path / "r.json"
    resumed = cli("apply", str(plan), "--resume", "--report", str(report))
    assert resumed.code == 1, resumed.out + resumed.err
    assert "re-attached to execution 2" in resumed.out
    assert executions(app) == {"1": 1, "2": 1, "3": 1, "9": 1}  # load was not triggered again
    steps = steps_of(report)
    assert (steps["rollback"]["state"], steps["release"]["state"]) == ("succeeded", "succeeded")


def test_resume_judges_a_clean_up_step_again_when_its_upstream_runs_again(
    cli, api, tmp_path
) -> None:
    plan = write(
        tmp_path, PLAN.replace("depends_on: extract}", "depends_on: extract, on_failure: continue}")
    )
    app = api(Scenario(default=FAST, workflows={2: {"fail_first": 1}}))
    first = cli("apply", str(plan))
    assert first.code == 1
    assert "rollback (workflow 3): starting: run_if failure: upstream load failed" in first.out
    report = tmp_path / "r.json"
    resumed = cli("apply", str(plan), "--resume", "--report", str(report))
    assert resumed.code == 0, resumed.out
    steps = steps_of(report)
    rollback = steps["rollback"]
    assert (rollback["state"], rollback["reason"]) == (
        "skipped",
        "run_if failure: no upstream failed",
    )
    assert [a["state"] for a in rollback["attempts"]] == ["succeeded"]  # the earlier one stays
    assert [a["state"] for a in steps["load"]["attempts"]] == ["failed", "succeeded"]
    assert len(steps["release"]["attempts"]) == 2  # judged again: load ran again
    assert executions(app) == {"1": 1, "2": 2, "3": 1, "4": 1, "9": 2}
    status = cli("status")
    assert re.search(
        r"SKIPPED   rollback \(workflow 3, run_if failure\)( in \S+)?: run_if failure: no upstream",
        status.out,
    )
    assert "started because run_if always" in status.out


@pytest.mark.parametrize(
    ("argv", "ran"),
    [
        (("-s", "extract"), {"1": 1, "9": 1}),  # finally belongs to every selection
        (("-s", "release"), {"9": 1}),  # alone: nothing to wait for
        (("-x", "release"), {"1": 1, "2": 1, "4": 1}),  # excluded by name
        (("-x", "load+"), {"1": 1, "9": 1}),  # not by a downstream spec
    ],
)
def test_finally_under_select_and_exclude(cli, api, plan, argv, ran) -> None:
    app = api(Scenario(default=FAST))
    result = cli("apply", str(plan), *argv)
    assert result.code == 0, result.out + result.err
    assert executions(app) == ran


def test_an_ignored_failure_passes_to_success_and_failure_steps(cli, api, tmp_path) -> None:
    plan = write(
        tmp_path,
        "version: 1\nname: i\n"
        "defaults: {poll_interval: 20ms, max_poll_interval: 50ms}\n"
        "workflows:\n"
        "  flaky: {workflow_id: 1, on_failure: ignore}\n"
        "  next: {workflow_id: 2, depends_on: flaky}\n"
        "  alert: {workflow_id: 3, depends_on: flaky, run_if: failure}\n",
    )
    app = api(Scenario(default=FAST, workflows={1: {"outcome": "failed", "errors": ("meh",)}}))
    report, junit = tmp_path / "r.json", tmp_path / "j.xml"
    result = cli("apply", str(plan), "--report", str(report), "--junit", str(junit))
    assert result.code == 0, result.out
    assert executions(app) == {"1": 1, "2": 1}
    assert (
        "flaky (workflow 1, execution 1): failed (ignored): execution 1 failed [meh]" in result.out
    )
    summary = result.out[result.out.index("Run 1 of i") :]
    assert re.match(
        r"Run 1 of i succeeded in \S+: 1 succeeded, 1 failure ignored, 1 skipped\n", summary
    )
    assert re.search(r"IGNORED   flaky  workflow 1  execution 1: execution 1 failed\n", summary)
    document = json.loads(report.read_text())
    assert document["state"] == "succeeded"
    flaky = steps_of(report)["flaky"]
    assert (flaky["state"], flaky["ignored"], flaky["on_failure"]) == ("failed", True, "ignore")
    assert steps_of(report)["next"]["ignored"] is False
    suite = ET.parse(junit).getroot()
    assert (suite.get("failures"), suite.get("skipped")) == ("0", "2")
    case = next(c for c in suite.iter("testcase") if c.get("name") == "flaky")
    assert case.find("skipped").get("message") == "failed (on_failure: ignore): execution 1 failed"
    status = cli("status")
    assert re.search(
        r"IGNORED   flaky \(workflow 1, on_failure ignore\) in \S+: execution 1 failed", status.out
    )


def test_a_failing_clean_up_step_fails_the_run(cli, api, tmp_path) -> None:
    plan = write(
        tmp_path,
        "version: 1\nname: f\n"
        "defaults: {poll_interval: 20ms, max_poll_interval: 50ms}\n"
        "finally: [clean]\n"
        "workflows:\n  work: {workflow_id: 1}\n  clean: {workflow_id: 2}\n",
    )
    app = api(Scenario(default=FAST, workflows={2: {"outcome": "failed"}}))
    result = cli("apply", str(plan))
    assert result.code == 1
    assert executions(app) == {"1": 1, "2": 1}
    assert re.search(r"FAILED +clean +workflow 2 +execution 2: execution 2 failed", result.out)


def test_an_invalid_clean_up_rule_sends_nothing(cli, api, tmp_path) -> None:
    app = api(Scenario(default=FAST))
    plan = write(
        tmp_path,
        "version: 1\nworkflows:\n  alone: {workflow_id: 1, run_if: always}\n",
    )
    result = cli("apply", str(plan))
    assert result.code == 2
    assert result.err == (
        f"{plan}:3:35: workflows.alone.run_if: run_if always needs an upstream to judge, "
        "and the step has none: give it depends_on, or list it in finally\n"
        f"{plan}: invalid plan (1 problem)\n"
    )
    assert app.state.sandbox.stats()["requests_total"] == 0
