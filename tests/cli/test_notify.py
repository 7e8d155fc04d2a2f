"""Notifications and healthchecks pings end to end: ``runbook apply`` against a sandbox
on loopback, telling a real loopback receiver. One test per row of the event table,
the pings, the payloads, and every way a receiver or a configuration can go wrong."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from runbook.sandbox.app import create_app
from runbook.sandbox.scenario import Scenario
from runbook.sandbox.server import serve_in_thread
from tests.support.entry import entry_point
from tests.support.night import TOKEN, executions, finish
from tests.support.receiver import Receiver

FAST = {"queue": 0.0, "duration": 0.05}


def plan_file(tmp_path: Path, body: str = "", *, steps: str = "", name: str = "n") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"version: 1\nname: {name}\n"
        "defaults: {poll_interval: 20ms, max_poll_interval: 50ms, retry_delay: 10ms}\n"
        f"{body}"
        "workflows:\n" + (steps or "  a: {workflow_id: 1}\n  b: {workflow_id: 2, depends_on: a}\n")
    )
    return path


NOTIFY_ALL = """\
notify:
  - on: [succeeded, failed, interrupted, recovered, late]
    webhook_env: HOOK
"""


def events_of(receiver: Receiver) -> list[str]:
    return [request.json()["event"] for request in receiver.received if request.body]


def test_succeeded_sends_the_report_with_its_event(
    cli, api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api(Scenario(default=FAST))
    with Receiver() as receiver:
        monkeypatch.setenv("HOOK", receiver.url("/hooks/T0/B1/s3cr3t?sig=abc"))
        result = cli(
            "apply", str(plan_file(tmp_path, NOTIFY_ALL)), "--report", str(tmp_path / "r.json")
        )
    assert result.code == 0, result.err
    (request,) = receiver.received
    assert (request.method, request.target) == ("POST", "/hooks/T0/B1/s3cr3t?sig=abc")
    assert request.headers["content-type"] == "application/json"
    assert "authorization" not in request.headers  # the Nexadata token is not theirs
    payload = request.json()
    assert payload["event"] == "succeeded" and payload["state"] == "succeeded"
    assert payload["plan"] == "n" and [s["name"] for s in payload["steps"]] == ["a", "b"]
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["notifications"] == [
        {
            "kind": "webhook",
            "event": "succeeded",
            "target": "127.0.0.1",
            "ok": True,
            "error": None,
            "attempts": 1,
        }
    ]
    assert report["late"] is False


def test_failed_in_slack_format_lists_each_failed_step(
    cli, api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api(Scenario(default=FAST, workflows={1: {"outcome": "failed", "errors": ["Row count"]}}))
    body = "notify:\n  - {webhook_env: SLACK, format: slack}\n"  # on: default [failed]
    with Receiver() as receiver:
        monkeypatch.setenv("SLACK", receiver.url("/services/T/B/x"))
        result = cli("apply", str(plan_file(tmp_path, body)))
    assert result.code == 1
    (request,) = receiver.received
    assert request.json() == {
        "text": "runbook: run 1 of plan `n` failed: 1 failed, 1 skipped\n"
        "• `a` (workflow 1, execution 1): `execution 1 failed`\n"
        "    error: `Row count`"
    }


def test_the_alert_says_what_broke_and_what_the_clean_up_did(
    cli, api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API's error (redacted, escaped, cut) beside the failed step, and every
    clean-up step that ran with its outcome: in Slack, in JSON and in the --quiet
    summary a cron mail carries."""
    long = "Load aborted: constraint violation in fact_orders <!here> " + "x" * 300
    api(Scenario(default=FAST, workflows={2: {"outcome": "failed", "errors": [long]}}))
    body = "notify:\n  - {webhook_env: SLACK, format: slack}\n  - {webhook_env: HOOK}\n"
    steps = (
        "  a: {workflow_id: 1}\n  b: {workflow_id: 2, depends_on: a}\n"
        "  rollback: {workflow_id: 3, depends_on: b, run_if: failure}\n"
        "  unlock: {workflow_id: 4, depends_on: [b, rollback], run_if: always}\n"
    )
    with Receiver() as receiver:
        monkeypatch.setenv("SLACK", receiver.url("/slack"))
        monkeypatch.setenv("HOOK", receiver.url("/json"))
        result = cli("apply", str(plan_file(tmp_path, body, steps=steps)), "--quiet")
    assert result.code == 1
    sent = {request.target: request.json() for request in receiver.received}
    cut = long[:199] + "…"
    text = sent["/slack"]["text"].splitlines()
    assert text[1] == "• `b` (workflow 2, execution 2): `execution 2 failed`"
    assert text[2] == "    error: `" + cut.replace("<", "&lt;").replace(">", "&gt;") + "`"
    assert text[3] == "clean-up: `rollback` succeeded, `unlock` succeeded"
    document = sent["/json"]
    assert document["failures"] == [
        {
            "step": "b",
            "workflow_id": 2,
            "execution_id": 2,
            "reason": "execution 2 failed",
            "error": cut,
        }
    ]
    assert [(c["step"], c["run_if"], c["state"]) for c in document["clean_up"]] == [
        ("rollback", "failure", "succeeded"),
        ("unlock", "always", "succeeded"),
    ]
    lines = result.out.splitlines()
    assert any(line.split()[:3] == ["CLEAN-UP", "rollback", "workflow"] for line in lines)
    assert "started because run_if failure: upstream b failed" in result.out


HOSTILE = "<!channel> <!here> *URGENT* <http://evil.example/login|Click to re-authenticate>"
SHOWN = (
    "&lt;!channel&gt; &lt;!here&gt; *URGENT* "
    "&lt;http://evil.example/login|Click to re-authenticate&gt;"
)


def refusing(app, workflow_id: int, body: str):
    """The sandbox, but the trigger of ``workflow_id`` is refused: HTTP 400 with ``body``."""

    async def asgi(scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] == f"/api/v1/workflows/{workflow_id}/execute":
            await send({"type": "http.response.start", "status": 400, "headers": []})
            await send({"type": "http.response.body", "body": body.encode()})
            return
        await app(scope, receive, send)

    return asgi


def test_slack_markup_from_the_api_or_the_plan_is_shown_never_parsed(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An execution's errors and a 4xx body can hold Slack's control sequences (a
    channel-wide mention, a masked link) and its emphasis: the message shows them as
    text, each in a code span of runbook's own."""
    scenario = Scenario(default=FAST, workflows={1: {"outcome": "failed", "errors": [HOSTILE]}})
    app = refusing(create_app(scenario, token=TOKEN), 2, HOSTILE)
    monkeypatch.setenv("NEXADATA_TOKEN", TOKEN)
    monkeypatch.setenv("RUNBOOK_STATE_DIR", str(tmp_path / "state"))
    plan = tmp_path / "p.yaml"
    plan.write_text(
        'version: 1\nname: "ops & <!here> `x` _y_"\n'
        "defaults: {poll_interval: 20ms, max_poll_interval: 50ms, retry_delay: 10ms}\n"
        "notify:\n  - {webhook_env: SLACK, format: slack}\n"
        "workflows:\n  _a_: {workflow_id: 1}\n  b: {workflow_id: 2}\n"
    )
    with serve_in_thread(app) as url, Receiver() as receiver:
        monkeypatch.setenv("NEXADATA_API_URL", url)
        monkeypatch.setenv("SLACK", receiver.url("/services/T/B/x"))
        result = cli("apply", str(plan))
    assert result.code == 1, result.err
    assert HOSTILE in result.out  # the terminal shows what the API said
    (request,) = receiver.received
    text = request.json()["text"]
    assert text == (
        "runbook: run 1 of plan `ops &amp; &lt;!here&gt; \u02cbx\u02cb _y_` failed: 2 failed\n"
        "• `_a_` (workflow 1, execution 1): `execution 1 failed`\n"
        f"    error: `{SHOWN}`\n"
        f"• `b` (workflow 2): `the API answered HTTP 400 for workflow 2 ({SHOWN})`"
    )
    for raw in ("<!channel>", "<!here>", "<http", "<", ">"):
        assert raw not in text


def test_a_success_sends_nothing_to_a_target_of_failures_only(
    cli, api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api(Scenario(default=FAST))
    with Receiver() as receiver:
        monkeypatch.setenv("HOOK", receiver.url())
        result = cli("apply", str(plan_file(tmp_path, "notify: [{webhook_env: HOOK}]\n")))
    assert result.code == 0 and receiver.received == []


def test_recovered_after_a_failed_run_and_after_a_resume_never_on_a_first_run(
    cli, api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # workflow 1 fails its first two executions: run 1 fails, run 2 succeeds (a new run),
    # run 3 succeeds (nothing to recover from); then run 4 fails and its resume succeeds
    app = api(Scenario(default=FAST, workflows={1: {"fail_first": 2}}))
    plan = plan_file(tmp_path, NOTIFY_ALL)
    with Receiver() as receiver:
        monkeypatch.setenv("HOOK", receiver.url())
        assert cli("apply", str(plan)).code == 1
        assert events_of(receiver) == ["failed"]  # a first run: never recovered
        assert cli("apply", str(plan)).code == 1  # the second failure of workflow 1
        assert cli("apply", str(plan)).code == 0
        assert events_of(receiver)[2:] == ["succeeded", "recovered"]
        assert cli("apply", str(plan)).code == 0
        assert events_of(receiver)[4:] == ["succeeded"]  # the run before succeeded
    assert executions(app) == {"1": 4, "2": 2}


def test_recovered_when_a_resume_succeeds(
    cli, api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api(Scenario(default=FAST, workflows={2: {"fail_first": 1}}))
    plan = plan_file(tmp_path, NOTIFY_ALL)
    with Receiver() as receiver:
        monkeypatch.setenv("HOOK", receiver.url())
        assert cli("apply", str(plan)).code == 1
        assert cli("apply", str(plan), "--resume").code == 0
    assert events_of(receiver) == ["failed", "succeeded", "recovered"]
    assert [r.json()["run_id"] for r in receiver.received] == [1, 1, 1]


def test_late_arrives_while_the_run_is_still_going(
    api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = api(Scenario(default={"queue": 0.0, "duration": None}))  # until the test ends it
    plan = plan_file(tmp_path, "deadline: 300ms\n" + NOTIFY_ALL, steps="  a: {workflow_id: 1}\n")
    with Receiver() as receiver:
        monkeypatch.setenv("HOOK", receiver.url())
        process = subprocess.Popen(
            [*entry_point(), "apply", str(plan), "--report", str(tmp_path / "r.json")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        (late,) = receiver.wait_for(1)
        finish(app)  # late came while the run went: now it may end
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert late.json()["event"] == "late" and late.json()["state"] == "running"
    assert late.json()["late"] is True
    assert events_of(receiver) == ["late", "succeeded"]
    assert "warning: run 1 is late: still going past its 300ms deadline" in out
    assert "  late: it passed its 300ms deadline" in out  # the summary says it too
    assert json.loads((tmp_path / "r.json").read_text())["late"] is True


def test_a_resume_after_the_deadline_sends_late_once_per_run(
    cli, api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api(Scenario(default=FAST, workflows={2: {"fail_first": 1}}))
    plan = plan_file(tmp_path, "deadline: 1h\n" + NOTIFY_ALL)
    with Receiver() as receiver:
        monkeypatch.setenv("HOOK", receiver.url())
        assert cli("apply", str(plan)).code == 1  # over in time: not late
        # two hours pass before the resume: the run started then, as its journal says
        with sqlite3.connect(tmp_path / "state" / "journal.sqlite3") as db:
            db.execute("UPDATE runs SET started_at = started_at - 7200")
        resumed = cli("apply", str(plan), "--resume", "--log-format", "json")
        assert resumed.code == 0
        assert events_of(receiver) == ["failed", "late", "succeeded", "recovered"]
        lines = [json.loads(line) for line in resumed.out.splitlines()]
        (late,) = [line for line in lines if line["event"] == "late"]
        assert late["level"] == "warning" and late["deadline"] == 3600
    status = json.loads(cli("status", "--format", "json").out)
    assert status["late"] is True
    assert [n["event"] for n in status["notifications"]] == [
        "failed",
        "late",
        "succeeded",
        "recovered",
    ]


def test_interrupted_and_the_fail_ping(
    api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api(Scenario(default={"queue": 0.0, "duration": None}))  # runs forever
    body = NOTIFY_ALL + "healthchecks: {ping_url_env: HC}\n"
    plan = plan_file(tmp_path, body, steps="  a: {workflow_id: 1}\n")
    with Receiver() as receiver:
        monkeypatch.setenv("HOOK", receiver.url("/hook"))
        monkeypatch.setenv("HC", receiver.url("/ping/5f2c?rid=night"))
        process = subprocess.Popen(
            [*entry_point(), "apply", str(plan)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert receiver.wait_for(1)[0].target == "/ping/5f2c/start?rid=night"
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    by_target = {request.target: request for request in receiver.received}
    assert set(by_target) == {"/ping/5f2c/start?rid=night", "/hook", "/ping/5f2c/fail?rid=night"}
    assert by_target["/hook"].json()["event"] == "interrupted"
    ping = by_target["/ping/5f2c/fail?rid=night"]
    assert ping.headers["content-type"] == "text/plain; charset=utf-8"
    assert ping.body.decode().startswith("Run 1 of n interrupted in ")


def test_the_success_ping_carries_the_summary_after_its_start(
    cli, api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api(Scenario(default=FAST))
    with Receiver() as receiver:
        monkeypatch.setenv("HC", receiver.url("/ping/abc"))
        result = cli(
            "apply", str(plan_file(tmp_path, "healthchecks: {ping_url_env: HC}\n")), "--quiet"
        )
    assert (result.code, result.out, result.err) == (0, "", "")  # --quiet: still pinged
    start, end = receiver.received
    assert (start.target, start.body) == ("/ping/abc/start", b"")
    assert end.target == "/ping/abc"
    assert end.body.decode().startswith("Run 1 of n succeeded in ")
    assert end.body.decode().endswith(": 2 succeeded\n")


@pytest.mark.parametrize(
    ("answers", "received", "error"),
    [
        ([500], 3, "HTTP 500 (3 attempts)"),
        (["reset"], 3, "the connection failed (Server disconnected) (3 attempts)"),
        (["redirect"], 1, "HTTP 302: a redirect, not followed"),
        ([404], 1, "HTTP 404"),
    ],
    ids=["500", "reset", "redirect", "404"],
)
def test_a_failing_receiver_is_a_warning_and_changes_nothing(
    cli, api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, answers, received, error
) -> None:
    api(Scenario(default=FAST))
    with Receiver(default=answers[0]) as receiver:
        monkeypatch.setenv("HOOK", receiver.url("/secret/path?key=k3y"))
        result = cli(
            "apply", str(plan_file(tmp_path, NOTIFY_ALL)), "--report", str(tmp_path / "r.json")
        )
    assert result.code == 0  # the run's, not the delivery's
    assert len(receiver.received) == received
    expected = f"the 'succeeded' notification to 127.0.0.1 was not delivered: {error}"
    assert f"runbook: warning: {expected}\n" in result.err
    assert f"  {expected}\n" not in result.out  # a run that succeeded prints no such line
    report = json.loads((tmp_path / "r.json").read_text())
    (entry,) = report["notifications"]
    assert (entry["ok"], entry["attempts"]) == (False, received)
    for text in (result.out, result.err, (tmp_path / "r.json").read_text()):
        assert "secret" not in text and "k3y" not in text


def test_a_busy_receiver_is_tried_again(
    cli, api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api(Scenario(default=FAST))
    with Receiver(answers=[429, 503]) as receiver:
        monkeypatch.setenv("HOOK", receiver.url())
        result = cli("apply", str(plan_file(tmp_path, NOTIFY_ALL)), "--log-format", "json")
    assert result.code == 0 and result.err == ""
    assert len(receiver.received) == 3
    (line,) = [json.loads(x) for x in result.out.splitlines() if '"notification"' in x]
    assert (line["ok"], line["attempts"], line["level"]) == (True, 3, "info")


def test_a_failed_run_under_quiet_lists_what_was_not_delivered(
    cli, api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api(Scenario(default=FAST, workflows={1: {"outcome": "failed"}}))
    with Receiver(default=500) as receiver:
        monkeypatch.setenv("HOOK", receiver.url())
        result = cli("apply", str(plan_file(tmp_path, NOTIFY_ALL)), "--quiet")
    assert result.code == 1 and result.err == ""  # --quiet: only the summary
    assert (
        "  the 'failed' notification to 127.0.0.1 was not delivered: HTTP 500 (3 attempts)\n"
        in result.out
    )
    status = cli("status").out
    assert "notification 'failed' to 127.0.0.1 at " in status
    assert ": not delivered: HTTP 500 (3 attempts)" in status


def test_a_receiver_that_never_answers_holds_the_end_30_s_at_most(
    api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api(Scenario(default=FAST))
    body = NOTIFY_ALL + "healthchecks: {ping_url_env: HC}\n"
    plan = plan_file(tmp_path, body, steps="  a: {workflow_id: 1}\n")
    with Receiver(answers=["ok"], default="hang") as receiver:  # /start answered, then none
        monkeypatch.setenv("HOOK", receiver.url("/hook"))
        monkeypatch.setenv("HC", receiver.url("/ping"))
        started = time.monotonic()
        done = subprocess.run(
            [*entry_point(), "apply", str(plan), "--log-format", "json"],
            capture_output=True,
            text=True,
            timeout=90,
        )
        took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    finished = next(line for line in lines if line["event"] == "run_finished")
    assert finished["state"] == "succeeded"
    failed = {
        line["kind"]: line["error"]
        for line in lines
        if line["event"] == "notification" and not line["ok"]
    }
    assert failed == {
        "webhook": "not delivered within the 30s the end of a run waits",  # 3 tries of 10 s
        "healthchecks": "no answer within 10s",  # a ping is tried once
    }
    assert 30 <= took < 50, took  # 30 s waited, and bounded: start-up and the run are seconds


def test_unusable_targets_are_exit_3_before_anything_is_triggered(
    cli, api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = api(Scenario(default=FAST))
    plan = plan_file(tmp_path, NOTIFY_ALL + "healthchecks: {ping_url_env: HC}\n")
    monkeypatch.setenv("HC", "https://hc-ping.com/uuid")
    unset = cli("apply", str(plan))
    assert unset.code == 3
    assert unset.err == "runbook: notify[0]: the environment variable HOOK is not set or empty\n"
    monkeypatch.setenv("HOOK", "  ")
    assert cli("apply", str(plan)).err.endswith("HOOK is not set or empty\n")
    monkeypatch.setenv("HOOK", "http://hooks.example.com/services/T/B/s3cr3t")
    insecure = cli("apply", str(plan))
    assert insecure.code == 3
    assert insecure.err == (
        "runbook: notify[0]: the URL in HOOK must use https:// (plain http:// is allowed only "
        "to a loopback host): it is a secret, and so is what runbook sends it\n"
    )
    monkeypatch.setenv("HOOK", "https://hooks.example.com/x")
    monkeypatch.delenv("HC")
    assert cli("apply", str(plan)).err == (
        "runbook: healthchecks: the environment variable HC is not set or empty\n"
    )
    assert app.state.sandbox.stats()["requests_total"] == 0
    assert cli("history").out == "No runs in the journal.\n"  # not even a run was written


def test_every_variable_a_run_needs_and_lacks_is_named_at_once(
    cli, api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = api(Scenario(default=FAST))
    body = "notify:\n  - {webhook_env: HOOK}\n  - {webhook_env: CHAT, format: slack}\n"
    plan = plan_file(tmp_path, body + "healthchecks: {ping_url_env: HC}\n")
    monkeypatch.delenv("NEXADATA_TOKEN")
    result = cli("apply", str(plan))
    assert result.code == 3
    lines = result.err.splitlines()
    assert len(lines) == 4 and all(line.startswith("runbook: ") for line in lines)
    assert "NEXADATA_TOKEN" in lines[0]
    assert lines[1:] == [
        "runbook: notify[0]: the environment variable HOOK is not set or empty",
        "runbook: notify[1]: the environment variable CHAT is not set or empty",
        "runbook: healthchecks: the environment variable HC is not set or empty",
    ]
    assert app.state.sandbox.stats()["requests_total"] == 0


def test_at_risk_fires_once_while_the_run_goes_when_the_p90_end_passes_the_deadline(
    api, cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = api(Scenario(default={"queue": 0.0, "duration": 0.4}))
    steps = "  a: {workflow_id: 1}\n  b: {workflow_id: 2, depends_on: a}\n"
    body = "notify:\n  - {on: [at_risk, late, succeeded], webhook_env: HOOK}\n"
    first = plan_file(tmp_path, body, steps=steps)
    with Receiver() as receiver:
        monkeypatch.setenv("HOOK", receiver.url())
        assert cli("apply", str(first)).code == 0  # no history yet: no forecast, no risk
        assert events_of(receiver) == ["succeeded"]
        # the history says a run takes about 0.8 s: a deadline of 0.6 s is at risk. This
        # run's executions go on until at_risk and late have come
        app.state.sandbox.use(Scenario(default={"queue": 0.0, "duration": None}))
        risky = plan_file(tmp_path, "deadline: 600ms\n" + body, steps=steps)
        process = subprocess.Popen(
            [*entry_point(), "apply", str(risky), "--log-format", "json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        receiver.wait_for(3)
        app.state.sandbox.use(Scenario(default={"queue": 0.0, "duration": 0.0}))
        finish(app)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert events_of(receiver)[1:] == ["at_risk", "late", "succeeded"]
    at_risk = receiver.received[1].json()
    assert at_risk["state"] == "running" and at_risk["event"] == "at_risk"
    lines = [json.loads(line) for line in out.splitlines()]
    forecasts = [line for line in lines if line["event"] == "forecast"]
    assert [line["at_risk"] for line in forecasts] == [True] + [False] * (len(forecasts) - 1)
    assert forecasts[0]["level"] == "warning"
    assert "is at risk of missing its 600ms deadline: its p90 end is " in forecasts[0]["message"]
    assert forecasts[0]["critical_path"] == ["a", "b"]
