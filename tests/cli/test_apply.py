"""runbook apply end to end: the sandbox on real loopback, every output mode, every exit."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from runbook.sandbox.app import create_app
from runbook.sandbox.scenario import Scenario
from runbook.sandbox.server import serve_in_thread
from tests.support.entry import entry_point, run_entry
from tests.support.paths import ROOT

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
SECRET = "apply-secret-Qm91-distinct"
PLAN = """\
version: 1
name: t
defaults: {poll_interval: 20ms, max_poll_interval: 50ms, retry_delay: 10ms}
workflows:
  load: {workflow_id: 29}
  side: {workflow_id: 61, depends_on: load, on_failure: continue}
  report: {workflow_id: 57, depends_on: load}
"""
FAST = "default: {queue: 0ms, duration: 50ms}\n"


@pytest.fixture
def plan(tmp_path: Path) -> Path:
    path = tmp_path / "t.yaml"
    path.write_text(PLAN)
    return path


def scenario(tmp_path: Path, text: str = "") -> str:
    path = tmp_path / "scenario.yaml"
    path.write_text(FAST + text)
    return str(path)


def test_success_plain_lines_and_summary(cli, plan: Path, tmp_path: Path) -> None:
    result = cli("apply", str(plan), "--sandbox", "--scenario", scenario(tmp_path))
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert all(re.match(rf"^{STAMP} ", line) for line in lines[:-1])
    assert re.match(rf"^{STAMP} run \d+ started: plan t, 3 workflows, max_parallel 4$", lines[0])
    assert re.search(r" load \(workflow 29\): triggering \(attempt 1\)$", lines[1])
    assert re.search(r" load \(workflow 29, execution 1\): running$", lines[2])
    assert re.search(r" load \(workflow 29, execution 1\): succeeded in \d", result.out)
    assert re.match(r"^Run \d+ of t succeeded in \S+: 3 succeeded$", lines[-1])
    assert result.err == ""


def test_failure_exit_1_with_reasons_and_errors(cli, plan: Path, tmp_path: Path) -> None:
    path = scenario(tmp_path, "workflows:\n  61: {outcome: failed, errors: [Audience rejected]}\n")
    result = cli("apply", str(plan), "--sandbox", "--scenario", path)
    assert result.code == 1
    summary = result.out[result.out.index("Run 1 of t") :]
    assert re.fullmatch(
        r"Run 1 of t failed in \S+: 2 succeeded, 1 failed\n"
        r"  FAILED    side  workflow 61  execution \d: execution \d failed\n"
        r"                  error: Audience rejected\n",  # no resume hint: --sandbox
        summary,
    )
    assert re.search(
        r"side \(workflow 61, execution \d\): failed: execution \d failed "
        r"\[Audience rejected\]",
        result.out,
    )


def test_quiet(cli, plan: Path, tmp_path: Path) -> None:
    ok = cli("apply", str(plan), "--sandbox", "--scenario", scenario(tmp_path), "--quiet")
    assert (ok.code, ok.out, ok.err) == (0, "", "")
    path = scenario(tmp_path, "workflows:\n  57: {outcome: failed}\n")
    failed = cli("apply", str(plan), "--sandbox", "--scenario", path, "-q")
    assert failed.code == 1
    assert failed.out.startswith("Run 2 of t failed in ")
    assert "FAILED    report" in failed.out and "triggering" not in failed.out


def test_json_lines(cli, plan: Path, tmp_path: Path) -> None:
    result = cli(
        "apply", str(plan), "--sandbox", "--scenario", scenario(tmp_path), "--log-format", "json"
    )
    assert result.code == 0
    events = [json.loads(line) for line in result.out.splitlines()]
    assert events[0]["event"] == "run_started" and events[0]["plan"] == "t"
    assert events[-1] == {
        **events[-1],
        "event": "run_finished",
        "state": "succeeded",
        "counts": {"succeeded": 3},
    }
    finished = [e for e in events if e["event"] == "step_finished"]
    assert {e["step"] for e in finished} == {"load", "side", "report"}
    assert all(re.fullmatch(STAMP, e["time"]) for e in events)
    assert finished[0]["attempt"]["execution_id"] == 1


def test_report_and_junit(cli, plan: Path, tmp_path: Path) -> None:
    path = scenario(tmp_path, "workflows:\n  61: {outcome: failed, errors: [bad rows]}\n")
    report, junit = tmp_path / "out" / "r.json", tmp_path / "j.xml"
    report.parent.mkdir()
    result = cli(
        "apply",
        str(plan),
        "--sandbox",
        "--scenario",
        path,
        "--report",
        str(report),
        "--junit",
        str(junit),
        "-q",
    )
    assert result.code == 1
    document = json.loads(report.read_text())
    assert set(document) == {
        "plan",
        "run_id",
        "state",
        "started_at",
        "ended_at",
        "late",
        "steps",
        "notifications",
        "api_url",
        "auth",
        "token_refreshes",
    }
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/api/v1", document["api_url"])  # the sandbox's
    assert document["late"] is False and document["notifications"] == []
    assert document["plan"] == "t" and document["state"] == "failed"
    assert re.fullmatch(STAMP, document["started_at"]) and re.fullmatch(STAMP, document["ended_at"])
    steps = {s["name"]: s for s in document["steps"]}
    assert [s["name"] for s in document["steps"]] == ["load", "report", "side"]
    side = steps["side"]
    assert set(side) == {
        "name",
        "workflow_id",
        "state",
        "reason",
        "run_if",
        "on_failure",
        "ignored",
        "attempts",
    }
    assert (side["run_if"], side["on_failure"], side["ignored"]) == ("success", "continue", False)
    assert (side["workflow_id"], side["state"]) == (61, "failed")
    assert re.fullmatch(r"execution \d failed", side["reason"])
    (attempt,) = side["attempts"]
    assert set(attempt) == {"execution_id", "state", "start_at", "end_at", "errors", "warnings"}
    assert attempt["state"] == "failed" and attempt["errors"] == ["bad rows"]
    assert steps["load"]["reason"] is None and steps["load"]["state"] == "succeeded"
    suite = ET.parse(junit).getroot()
    assert (
        suite.tag,
        suite.get("name"),
        suite.get("tests"),
        suite.get("failures"),
        suite.get("skipped"),
    ) == ("testsuite", "t", "3", "1", "0")
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert cases["side"].find("failure").get("message") == side["reason"]
    assert "error: bad rows" in cases["side"].find("failure").text
    assert cases["load"].find("failure") is None and cases["load"].find("skipped") is None


def test_junit_marks_skipped_and_cancelled(cli, plan: Path, tmp_path: Path) -> None:
    path = scenario(tmp_path, "workflows:\n  29: {outcome: failed}\n")
    junit = tmp_path / "j.xml"
    assert (
        cli("apply", str(plan), "--sandbox", "--scenario", path, "--junit", str(junit), "-q").code
        == 1
    )
    suite = ET.parse(junit).getroot()
    assert (suite.get("failures"), suite.get("skipped")) == ("1", "2")
    skipped = {
        c.get("name"): c.find("skipped").get("message")
        for c in suite.iter("testcase")
        if c.find("skipped") is not None
    }
    assert skipped == {
        "report": "skipped: upstream load did not succeed",
        "side": "skipped: upstream load did not succeed",
    }


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ("--scenario", "x.yaml"),
            "runbook: --scenario configures the built-in simulator: add --sandbox\n",
        ),
        (
            ("--sandbox", "--api-url", "https://h/api/v1"),
            "runbook: --sandbox runs against the built-in simulator: drop --api-url\n",
        ),
        (
            ("--sandbox", "-s", "lod"),
            "runbook: --select 'lod': unknown step 'lod'; did you mean 'load'?\n",
        ),
        (
            (
                "--max-parallel",
                "0",
            ),
            "Error: Invalid value for '--max-parallel': 0 is not in the range x>=1.",
        ),
    ],
)
def test_usage_errors_exit_2(cli, plan: Path, argv, message) -> None:
    result = cli("apply", str(plan), *argv)
    assert result.code == 2
    assert message in result.err


def test_invalid_plan_exits_2_and_sends_nothing(cli, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("version: 1\nworkflows:\n  a: {workflow_id: 1, depends_on: b}\n")
    result = cli("apply", str(path), "--sandbox")
    assert result.code == 2
    assert result.err == (
        f"{path}:3:35: workflows.a.depends_on: unknown step 'b'\n{path}: invalid plan (1 problem)\n"
    )


def test_configuration_errors_exit_3(cli, plan: Path, monkeypatch) -> None:
    result = cli("apply", str(plan))
    assert result.code == 3
    assert result.err == (
        "runbook: no API token: set the environment variable NEXADATA_TOKEN "
        "(the plan's api.token_env), configure the plan's api.oauth client, or pass "
        "--token-file or --token-command\n"
    )
    monkeypatch.setenv("NEXADATA_TOKEN", SECRET)
    result = cli("apply", str(plan), "--api-url", "http://nexadata.example.com/api/v1")
    assert result.code == 3
    assert "must use https://" in result.err and SECRET not in result.err


def test_against_a_served_api_with_env_url_and_token(
    cli, plan: Path, monkeypatch, tmp_path: Path
) -> None:
    app = create_app(Scenario(default={"queue": 0.0, "duration": 0.05}), token=SECRET)
    with serve_in_thread(app) as url:
        monkeypatch.setenv("NEXADATA_API_URL", url)
        monkeypatch.setenv("NEXADATA_TOKEN", "wrong-token")
        denied = cli("apply", str(plan), "--report", str(tmp_path / "r.json"))
        token_file = tmp_path / "token"
        token_file.write_text(SECRET + "\n")
        report = tmp_path / "ok.json"
        ok = cli(
            "apply",
            str(plan),
            "--token-file",
            str(token_file),
            "--report",
            str(report),
            "--junit",
            str(tmp_path / "j.xml"),
            "--log-format",
            "json",
        )
    assert denied.code == 3
    assert (
        "authentication failed: the API answered 401 (unauthorized); check the environment "
        "variable NEXADATA_TOKEN" in denied.out
    )
    assert ok.code == 0, ok.out
    for text in (
        denied.out,
        denied.err,
        ok.out,
        ok.err,
        report.read_text(),
        (tmp_path / "j.xml").read_text(),
        (tmp_path / "r.json").read_text(),
    ):
        assert SECRET not in text


def test_sigint_on_a_real_process_exits_130(tmp_path: Path, plan: Path) -> None:
    path = scenario(tmp_path, "workflows:\n  29: {duration: forever}\n")
    process = subprocess.Popen(
        [*entry_point(), "apply", str(plan), "--sandbox", "--scenario", path],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        lines.append(line)
        if "execution 1): running" in line:
            break
    # the token is in its memory: it may leave no core file
    limits = Path(f"/proc/{process.pid}/limits").read_text()
    assert re.search(r"^Max core file size +0 +0 ", limits, re.MULTILINE), limits
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    summary = out[out.index("Run 1 of t") :]
    assert summary.startswith("Run 1 of t interrupted in ")
    assert "Resume with" not in summary  # a sandbox run cannot be resumed (test_durable)
    assert "3 pending" in summary
    assert "interrupted by SIGINT" in summary
    assert re.search(
        r"PENDING   load +workflow 29  execution 1: interrupted while execution 1 "
        r"was running; it may still be running",
        summary,
    )
    assert "Traceback" not in err


def test_readme_first_command_example_runs(cli) -> None:
    result = cli("apply", str(ROOT / "examples" / "nightly.yaml"), "--sandbox", "-q")
    assert (result.code, result.out) == (0, "")


def test_plain_lines_for_retries_timeouts_and_unknown_states(cli, tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "version: 1\nname: p\n"
        "defaults: {poll_interval: 20ms, max_poll_interval: 50ms, retry_delay: 10ms}\n"
        "workflows:\n"
        "  flaky: {workflow_id: 1, retries: 1, on_failure: continue}\n"
        "  stuck: {workflow_id: 2, timeout: 200ms, on_failure: continue}\n"
        "  odd: {workflow_id: 3}\n"
    )
    sc = scenario(
        tmp_path,
        "workflows:\n  1: {fail_first: 1, errors: [flaked]}\n"
        "  2: {duration: forever}\n  3: {running_state: paused, duration: 0.1}\n",
    )
    result = cli("apply", str(path), "--sandbox", "--scenario", sc)
    assert result.code == 1
    out = result.out
    assert re.search(r"flaky \(workflow 1, execution \d\): failed: flaked; retrying in 10ms", out)
    assert re.search(r"flaky \(workflow 1\): triggering \(attempt 2\)", out)
    assert re.search(r"stuck \(workflow 2, execution \d\): attempt 1 timed out", out)
    assert re.search(
        r"stuck \(workflow 2, execution \d\): failed: timed out \(the remote "
        r"execution may still be running\)",
        out,
    )
    assert re.search(
        r"odd \(workflow 3, execution \d\): warning: execution \d reports an "
        r"unknown state 'paused'",
        out,
    )
    assert re.search(r"odd \(workflow 3, execution \d\): succeeded", out)


def test_a_token_file_that_is_no_regular_file_or_too_big_is_refused_before_the_lock(
    cli, plan: Path, tmp_path: Path, monkeypatch
) -> None:
    state = tmp_path / "state"
    monkeypatch.setenv("RUNBOOK_STATE_DIR", str(state))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # no writer: opening it would wait forever
    result = cli("apply", str(plan), "--token-file", str(fifo))
    assert (result.code, result.out) == (3, "")
    assert result.err == (
        f"runbook: the token file {fifo} is not a regular file (a directory, FIFO or "
        "device): write the token to a file\n"
    )
    big = tmp_path / "big"
    big.write_text("x" * (65 * 1024))
    result = cli("apply", str(plan), "--token-file", str(big))
    assert result.code == 3
    assert "is larger than 64 KiB: it should hold the token alone" in result.err
    assert not state.exists()  # refused before the journal and the lock


def test_a_token_file_others_can_read_is_warned_about(cli, plan: Path, tmp_path: Path) -> None:
    app = create_app(Scenario(default={"queue": 0.0, "duration": 0.05}), token=SECRET)
    token_file = tmp_path / "token"
    token_file.write_text(SECRET + "\n")
    token_file.chmod(0o644)
    with serve_in_thread(app) as url:
        shared = cli("apply", str(plan), "--api-url", url, "--token-file", str(token_file), "-q")
        token_file.chmod(0o600)
        private = cli("apply", str(plan), "--api-url", url, "--token-file", str(token_file), "-q")
    assert shared.code == 0 and private.code == 0
    assert shared.err == (
        f"runbook: warning: the token file {token_file} can be read or changed by other users "
        f"(mode 0644); make it yours alone: chmod 600 {token_file}\n"
    )
    assert private.err == ""


def test_report_to_dev_stdout_is_written_through(plan: Path, tmp_path: Path) -> None:
    result = run_entry(
        "apply",
        str(plan),
        "--sandbox",
        "--scenario",
        scenario(tmp_path),
        "-q",
        "--report",
        "/dev/stdout",
        "--state-dir",
        str(tmp_path / "state"),
    )
    assert result.code == 0, result.err
    assert json.loads(result.out)["state"] == "succeeded"
    assert Path("/dev/stdout").is_symlink() or not Path("/dev/stdout").is_file()


def test_report_files_keep_their_mode_and_a_failed_write_keeps_the_exit_code(
    cli, plan: Path, tmp_path: Path
) -> None:
    report = tmp_path / "r.json"
    report.write_text("{}")
    report.chmod(0o640)
    sc = scenario(tmp_path, "workflows:\n  57: {outcome: failed}\n")
    result = cli("apply", str(plan), "--sandbox", "--scenario", sc, "--report", str(report))
    assert result.code == 1
    assert json.loads(report.read_text())["state"] == "failed"
    assert stat.S_IMODE(report.stat().st_mode) == 0o640
    folder = tmp_path / "a-folder"
    folder.mkdir()
    missing = tmp_path / "nowhere" / "j.xml"
    result = cli(
        "apply",
        str(plan),
        "--sandbox",
        "--scenario",
        sc,
        "--report",
        str(folder),
        "--junit",
        str(missing),
    )
    assert result.code == 1  # the run's, not 70
    assert "Run 2 of t failed in " in result.out  # the summary came first
    assert result.err == (
        f"runbook: cannot write {folder}: Is a directory\n"
        f"runbook: cannot write {missing}: No such file or directory\n"
    )


def test_the_collector_settings_of_a_run_are_given_back(
    cli, plan: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """apply looks for reference cycles less often while it runs; a caller in the same
    process (a test, a script) gets its setting back."""
    import asyncio
    import gc

    import runbook.runner

    before = gc.get_threshold()
    during: list[tuple[int, ...]] = []

    real_run = asyncio.run

    def run(main):  # the run's event loop, as the runner starts it
        during.append(gc.get_threshold())
        return real_run(main)

    monkeypatch.setattr(runbook.runner.asyncio, "run", run)
    result = cli("apply", str(plan), "--sandbox", "--scenario", scenario(tmp_path))
    assert result.code == 0, result.err
    assert during == [(10_000, *before[1:])]
    assert gc.get_threshold() == before
