"""Durable runs with real processes and signals: SIGKILL, then --resume, and the lock.

The sandbox runs in this test process (a thread under uvicorn), so it outlives the
``runbook apply`` processes that are killed, and its counters say how many executions
each workflow really got.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
from pathlib import Path

from runbook.journal import PlanLock
from runbook.sandbox.app import POLL, TRIGGER, create_app
from runbook.sandbox.scenario import Faults, Scenario
from runbook.sandbox.server import serve_in_thread
from tests.support.entry import entry_point
from tests.support.night import PLAN, TOKEN, executions


def apply_until(plan: Path, marker: str | set[str], *extra: str) -> subprocess.Popen[str]:
    """Start ``runbook apply`` and return once lines containing ``marker`` (each of a
    set of markers) were printed."""
    awaited = {marker} if isinstance(marker, str) else set(marker)
    process = subprocess.Popen(
        [*entry_point(), "apply", str(plan), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    for line in process.stdout:
        awaited = {m for m in awaited if m not in line}
        if not awaited:
            return process
    raise AssertionError(f"apply ended before printing {marker!r}: {process.stderr.read()}")


def kill(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL


def test_sigkill_with_executions_in_flight_then_resume(cli, api, plan, tmp_path) -> None:
    app = api(
        Scenario(
            default={"queue": 0.0, "duration": 0.05},
            workflows={2: {"duration": 1.5}, 3: {"duration": 1.5}},
        )
    )
    process = apply_until(plan, "load (workflow 2, execution")
    kill(process)
    assert executions(app) == {"1": 1, "2": 1, "3": 1}  # load and side were in flight
    result = cli("apply", str(plan), "--resume", "--report", str(tmp_path / "r.json"))
    assert result.code == 0, result.out + result.err
    assert result.out.count("re-attached to execution") == 2
    assert executions(app) == {"1": 1, "2": 1, "3": 1, "4": 1}
    # the summary gives the run's whole time, from its first invocation's start
    (summary,) = [line for line in result.out.splitlines() if line.startswith("Run 1 of")]
    assert re.fullmatch(
        r"Run 1 of night succeeded in \S+ over 2 invocations \(this one \S+\): 4 succeeded",
        summary,
    ), summary
    document = json.loads((tmp_path / "r.json").read_text())
    assert document["run_id"] == 1 and document["state"] == "succeeded"
    load = next(s for s in document["steps"] if s["name"] == "load")
    assert len(load["attempts"]) == 1 and load["attempts"][0]["state"] == "succeeded"
    status = cli("status", "--format", "json")
    assert json.loads(status.out)["state"] == "succeeded"
    history = cli("history", "night")
    assert history.out.splitlines()[1].split()[:3] == ["1", "night", "succeeded"]


def test_sigkill_after_the_execution_id_before_the_first_poll(cli, api, plan) -> None:
    # the first poll is ten minutes away: the kill lands between the id and any poll
    plan.write_text(
        PLAN.replace("poll_interval: 20ms, max_poll_interval: 50ms", "poll_interval: 10m")
    )
    app = api(Scenario(default={"queue": 0.0, "duration": 0.05}))
    process = apply_until(plan, {"extract (workflow 1, execution", "side (workflow 3, execution"})
    kill(process)
    stats = app.state.sandbox.stats()
    assert POLL not in stats["requests"] and stats["executions"] == {"1": 1, "3": 1}
    plan.write_text(PLAN)  # resumed with quick polling; steps are matched by name
    result = cli("apply", str(plan), "--resume")
    assert result.code == 0, result.out + result.err
    assert result.out.count("re-attached to execution") == 2  # extract's and side's ids
    assert executions(app) == {"1": 1, "2": 1, "3": 1, "4": 1}


def test_sigkill_during_a_retry_delay_then_resume(cli, api, plan, tmp_path) -> None:
    plan.write_text(
        PLAN.replace("retry_delay: 10ms", "retry_delay: 1h").replace(
            "  extract: {workflow_id: 1}", "  extract: {workflow_id: 1, retries: 1}"
        )
    )
    app = api(Scenario(default={"queue": 0.0, "duration": 0.05}, workflows={1: {"fail_first": 1}}))
    process = apply_until(plan, "retrying in 1h")
    kill(process)
    assert executions(app)["1"] == 1
    result = cli("apply", str(plan), "--resume", "-q")
    assert result.code == 0, result.out
    assert executions(app) == {"1": 2, "2": 1, "3": 1, "4": 1}  # the retry that was due


def test_sigint_then_resume(cli, api, plan) -> None:
    app = api(Scenario(default={"queue": 0.0, "duration": 0.05}, workflows={2: {"duration": 1.0}}))
    process = apply_until(plan, "load (workflow 2, execution")
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=30)
    assert process.returncode == 130
    assert f"Resume with: runbook apply {plan} --resume" in out
    result = cli("apply", str(plan), "--resume", "-q")
    assert result.code == 0
    assert executions(app) == {"1": 1, "2": 1, "3": 1, "4": 1}


def test_a_second_signal_exits_at_once(api, plan) -> None:
    # the first SIGINT waits for the POSTs under way (answered 1 s late), and says so;
    # the second does not wait for anything
    api(Scenario(default={"queue": 0.0, "duration": 0.05}, faults=Faults(latency=1.0)))
    process = apply_until(plan, "extract (workflow 1): triggering")
    process.send_signal(signal.SIGINT)
    assert process.stderr is not None
    first = process.stderr.readline()
    assert first.startswith("runbook: SIGINT: stopping; waiting for ")
    assert first.endswith(" under way to be answered, so that no execution id is lost "
                          "(at most 30s) (a second SIGINT exits at once)\n")  # fmt: skip
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130
    assert err == "runbook: second SIGINT: exiting at once\n"


def test_an_unanswered_trigger_is_not_repeated_without_consent(cli, api, plan) -> None:
    app = api(Scenario(default={"queue": 0.0, "duration": 0.05}, faults=Faults(latency=1.0)))
    # the journal is the first sink: once "triggering" is printed, it is committed
    process = apply_until(plan, "extract (workflow 1): triggering")
    kill(process)
    refused = cli("apply", str(plan), "--resume")
    assert refused.code == 1
    assert "got no answer, so an execution may exist; not triggered again" in refused.out
    before = app.state.sandbox.stats()["requests"].get(TRIGGER, {})
    forced = cli("apply", str(plan), "--resume", "--retrigger-unknown", "-q")
    assert forced.code == 0, forced.out
    after = app.state.sandbox.stats()["requests"][TRIGGER]
    assert sum(after.values()) > sum(before.values())


def test_second_apply_of_the_same_plan_exits_4_and_sends_nothing(cli, api, plan, tmp_path) -> None:
    app = api(Scenario())
    lock = PlanLock(tmp_path / "state", "night")
    lock.acquire("run 41")
    try:
        result = cli("apply", str(plan))
    finally:
        lock.release()
    assert result.code == 4
    assert result.err == (
        f"runbook: another apply of plan 'night' is running (pid {os.getpid()}"
        ", run 41); wait for it to end, or use another --state-dir\n"
    )
    assert app.state.sandbox.stats()["requests_total"] == 0


def test_a_killed_holder_leaves_no_stale_lock(cli, api, plan) -> None:
    api(Scenario(default={"queue": 0.0, "duration": 5.0}))
    kill(apply_until(plan, "extract (workflow 1, execution"))
    other = subprocess.run([*entry_point(), "history"], capture_output=True, text=True)
    assert other.returncode == 0
    result = cli("apply", str(plan), "--resume", "-q", "-x", "extract+", "-x", "side")
    assert result.code == 0  # the lock was free: the kernel dropped it with the process


def test_resume_with_nothing_to_resume(cli, api, plan) -> None:
    api(Scenario(default={"queue": 0.0, "duration": 0.05}))
    assert cli("apply", str(plan), "-q").code == 0
    result = cli("apply", str(plan), "--resume")
    assert result.code == 2
    assert result.err == (
        "runbook: nothing to resume: plan 'night' has no run that did not "
        "succeed in this state dir\n"
    )
    assert cli("apply", str(plan), "--retrigger-unknown").code == 2
    refused = cli("apply", str(plan), "--resume", "--sandbox")
    assert refused.code == 2
    assert refused.err.startswith("runbook: --resume cannot use --sandbox: ")


def test_the_token_is_not_in_the_journal(cli, api, plan, tmp_path) -> None:
    api(Scenario(default={"queue": 0.0, "duration": 0.05}, workflows={3: {"outcome": "failed"}}))
    assert cli("apply", str(plan)).code == 1
    for path in (tmp_path / "state").rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
    assert oct((tmp_path / "state").stat().st_mode & 0o777) == "0o700"
    assert oct((tmp_path / "state" / "journal.sqlite3").stat().st_mode & 0o777) == "0o600"


def test_journal_failures_exit_5_before_any_request(cli, api, plan, tmp_path) -> None:
    app = api(Scenario())
    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    result = cli("apply", str(plan), "--state-dir", str(blocker))
    assert result.code == 5
    assert result.err.startswith(f"runbook: the state dir {blocker} cannot be used: ")
    newer = tmp_path / "newer"
    newer.mkdir()
    with sqlite3.connect(newer / "journal.sqlite3") as db:
        db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        db.execute("INSERT INTO schema_version VALUES (99)")
    result = cli("apply", str(plan), "--state-dir", str(newer))
    assert result.code == 5
    assert "written by a newer runbook (schema 99" in result.err
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "journal.sqlite3").write_bytes(b"this is not a database" * 100)
    result = cli("apply", str(plan), "--state-dir", str(corrupt))
    assert result.code == 5
    assert "cannot be opened" in result.err and "move it aside" in result.err
    assert app.state.sandbox.stats()["requests_total"] == 0


def test_resume_says_when_the_plan_changed_and_matches_steps(cli, api, plan) -> None:
    app = api(Scenario(default={"queue": 0.0, "duration": 0.05}, workflows={3: {"fail_first": 1}}))
    assert cli("apply", str(plan), "-q").code == 1  # side failed; report skipped
    plan.write_text(PLAN.replace("  side: {workflow_id: 3}", "  side: {workflow_id: 3}  # fixed"))
    result = cli("apply", str(plan), "--resume", "-q")
    assert result.code == 0
    assert result.err == (
        f"runbook: note: {plan} changed since run 1; its steps are matched by name and "
        "workflow id\n"
    )
    assert executions(app) == {"1": 1, "2": 1, "3": 2, "4": 1}
    assert cli("status", "7").code == 2
    assert cli("status", "7").err == "runbook: no run 7 in the journal\n"


def test_a_resume_goes_where_its_run_went(cli, api, tmp_path, monkeypatch) -> None:
    """The run went to one API (--api-url), the plan names another: the resume polls and
    triggers where the run went, and an --api-url or NEXADATA_API_URL naming the other
    is refused before anything is sent there."""
    app = api(Scenario(default={"queue": 0.0, "duration": 0.05}, workflows={2: {"duration": 1.5}}))
    where = os.environ["NEXADATA_API_URL"]
    monkeypatch.delenv("NEXADATA_API_URL")
    other = create_app(Scenario(), token=TOKEN)  # the API the plan names: production, say
    with serve_in_thread(other) as production:
        plan = tmp_path / "night.yaml"
        plan.write_text(
            PLAN.replace("version: 1\n", f"version: 1\napi: {{base_url: '{production}'}}\n")
        )
        kill(apply_until(plan, "load (workflow 2, execution", "--api-url", where))
        insecure = "http://api.staging.example/api/v1"  # another URL, and a bad one: exit 2
        for flag, env in (
            (("--api-url", production), {}),
            ((), {"NEXADATA_API_URL": production}),
            (("--api-url", insecure), {}),
        ):
            with monkeypatch.context() as scoped:
                for name, value in env.items():
                    scoped.setenv(name, value)
                refused = cli("apply", str(plan), "--resume", *flag)
            assert refused.code == 2, refused.err
            named = "--api-url" if flag else "NEXADATA_API_URL"
            given = flag[1] if flag else production
            assert f"run 1 went to {where}, and {named} names {given}" in refused.err
        report = tmp_path / "r.json"
        resumed = cli("apply", str(plan), "--resume", "--report", str(report))
        assert resumed.code == 0, resumed.out + resumed.err
        assert f"note: run 1 went to {where}: its resume goes there too" in resumed.err
        # the load, in flight at the kill, is polled again (and side too, if its end had
        # not been seen yet: how far it got is the machine's speed, not the rule's)
        assert re.search(r"load \(workflow 2, execution \d+\): re-attached", resumed.out)
        assert executions(app) == {"1": 1, "2": 1, "3": 1, "4": 1}
        assert sum(other.state.sandbox.requests.values()) == 0  # not one request
        assert json.loads(report.read_text())["api_url"] == where


def test_a_sandbox_run_cannot_be_resumed(cli, tmp_path) -> None:
    plan = tmp_path / "night.yaml"
    plan.write_text(PLAN)
    scenario = tmp_path / "s.yaml"
    scenario.write_text(
        "default: {queue: 0ms, duration: 10ms}\nworkflows: {2: {outcome: failed}}\n"
    )
    state = str(tmp_path / "state")
    failed = cli("apply", str(plan), "--sandbox", "--scenario", str(scenario), "--state-dir", state)
    assert failed.code == 1
    assert "Resume with" not in failed.out
    refused = cli("apply", str(plan), "--resume", "--state-dir", state)
    assert refused.code == 2
    assert refused.err == (
        "runbook: run 1 was made with --sandbox: its simulator, and the executions it "
        "followed, ended with it, so it cannot be resumed; start a new run instead\n"
    )


def test_a_run_whose_process_was_killed_shows_as_died(cli, api, plan, tmp_path) -> None:
    api(Scenario(default={"queue": 0.0, "duration": 0.05}, workflows={2: {"duration": 5.0}}))
    process = apply_until(plan, "load (workflow 2, execution")
    alive = json.loads(cli("history", "--format", "json").out)
    assert [run["state"] for run in alive] == ["running"]  # its process holds the lock
    assert cli("status").out.startswith("Run 1 of night: running")
    kill(process)
    history = cli("history")
    assert history.out.splitlines()[1].split()[:3] == ["1", "night", "died"]
    assert json.loads(cli("history", "--format", "json").out)[0]["state"] == "died"
    status = cli("status")
    assert status.out.startswith("Run 1 of night: died")
    state = tmp_path / "state"  # as RUNBOOK_STATE_DIR says: the resume names it
    assert (
        f"its process (pid {process.pid}) ended without ending the run: its executions may "
        f"still be running; resume with: runbook apply {plan} --resume --state-dir {state}\n"
    ) in status.out
    document = json.loads(cli("status", "--format", "json").out)
    assert document["state"] == "died" and document["pid"] == process.pid
    assert document["resume_command"] == f"runbook apply {plan} --resume --state-dir {state}"
    # a run made on another host sharing the state dir: nothing here can tell it died
    with sqlite3.connect(state / "journal.sqlite3") as db:
        (host,) = db.execute("SELECT host FROM runs").fetchone()
        db.execute("UPDATE runs SET host = 'build-02'")
    assert cli("status").out.startswith("Run 1 of night: running")
    with sqlite3.connect(state / "journal.sqlite3") as db:
        db.execute("UPDATE runs SET host = ?, auth = 'file'", (host,))
    # a run made with --token-file: its resume needs one, whose path the journal never keeps
    assert f"--resume --state-dir {state} --token-file FILE\n" in cli("status").out
    # the resume says whose process it follows, and so does its report
    report = tmp_path / "r.json"
    resumed = cli("apply", str(plan), "--resume", "-q", "--report", str(report))
    assert resumed.code == 0, resumed.out + resumed.err
    assert f"note: run 1 was left running by pid {process.pid} on {host}, whose process died" in (
        resumed.err
    )
    assert json.loads(report.read_text())["died"] == {"pid": process.pid, "host": host}
    assert json.loads(cli("history", "--format", "json").out)[0]["state"] == "succeeded"
