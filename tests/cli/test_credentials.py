"""Runs longer than a token lives, through the real command line against a real
sandbox on loopback whose tokens expire: the OAuth client, a token command, a token
file rotated mid-run, a static token that dies (and what a user does next: the same
command again, --resume, --new-run), processes sharing one client, and a refresh cut
short by SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from runbook.sandbox import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, SandboxOAuth
from runbook.sandbox.app import create_app
from runbook.sandbox.scenario import Scenario
from runbook.sandbox.server import serve_in_thread
from tests.support.entry import entry_point
from tests.support.night import TOKEN

PLAN = """\
version: 1
name: {name}
defaults: {{poll_interval: 50ms, max_poll_interval: 100ms}}
finally: [release_lock]
workflows:
  extract: {{workflow_id: 1}}
  load: {{workflow_id: 2, depends_on: extract}}
  report: {{workflow_id: 3, depends_on: load}}
  release_lock: {{workflow_id: 4}}
"""
OAUTH = """\
api:
  oauth:
    grant: {grant}
"""


@contextmanager
def sandbox(ttl: float, scenario: Scenario, wrap=None):
    """A sandbox whose OAuth tokens live ``ttl`` seconds, served on loopback."""
    app = create_app(scenario, token=TOKEN, oauth=SandboxOAuth(token_ttl=ttl))
    with serve_in_thread(wrap(app) if wrap else app) as url:
        yield app, url


def stats(app) -> dict:
    return app.state.sandbox.stats()


def token_url(url: str) -> str:
    return url.removesuffix("/api/v1") + "/oauth/token"


def mint(url: str) -> str:
    """An access token from the sandbox's client, as curl would get one."""
    answer = httpx.post(
        token_url(url),
        data={"grant_type": "client_credentials"},
        auth=(SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET),
    )
    answer.raise_for_status()
    return str(answer.json()["access_token"])


def write_plan(tmp_path: Path, name: str = "night", grant: str | None = None) -> Path:
    path = tmp_path / f"{name}.yaml"
    text = PLAN.format(name=name)
    if grant:
        text = text.replace("finally:", OAUTH.format(grant=grant) + "finally:")
    path.write_text(text)
    return path


def client_env(monkeypatch: pytest.MonkeyPatch, url: str, tmp_path: Path) -> None:
    monkeypatch.setenv("NEXADATA_API_URL", url)
    monkeypatch.setenv("NEXADATA_TOKEN_URL", token_url(url))
    monkeypatch.setenv("NEXADATA_CLIENT_ID", SANDBOX_CLIENT_ID)
    monkeypatch.setenv("NEXADATA_CLIENT_SECRET", SANDBOX_CLIENT_SECRET)
    monkeypatch.setenv("RUNBOOK_STATE_DIR", str(tmp_path / "state"))


SEQUENTIAL = Scenario(default={"queue": 0.0, "duration": 1.2})
QUICK = Scenario(default={"queue": 0.0, "duration": 0.05})


def test_an_oauth_client_carries_a_run_five_times_longer_than_its_tokens(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = write_plan(tmp_path, grant="client_credentials")
    report = tmp_path / "report.json"
    with sandbox(1.0, SEQUENTIAL) as (app, url):
        client_env(monkeypatch, url, tmp_path)
        result = cli("apply", str(plan), "--report", str(report))
        counters = stats(app)
    assert result.code == 0, result.out + result.err
    assert counters["executions"] == {"1": 1, "2": 1, "3": 1, "4": 1}
    minted = counters["token_requests"]["client_credentials"]
    assert minted >= 5  # 4 x 1.2 s of workflows on 1 s tokens, renewed half-way
    assert counters["expired_token_401s"] == 0  # renewed before expiry, never after
    document = json.loads(report.read_text())
    assert document["auth"] == "oauth client_credentials"
    assert document["token_refreshes"] == minted - 1
    assert "auth_failed" not in document and result.err == ""


def test_a_token_command_with_an_expiry_runs_again_before_it(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = tmp_path / "runs"
    script = tmp_path / "token.py"
    with sandbox(1.0, SEQUENTIAL) as (app, url):
        script.write_text(
            "import json, pathlib, urllib.request, base64\n"
            f"runs = pathlib.Path({str(runs)!r})\n"
            "runs.write_text(str(int(runs.read_text()) + 1) if runs.exists() else '1')\n"
            f"request = urllib.request.Request({token_url(url)!r},"
            " data=b'grant_type=client_credentials')\n"
            "pair = base64.b64encode(b'sandbox-client:sandbox-secret').decode()\n"
            "request.add_header('Authorization', 'Basic ' + pair)\n"
            "answer = json.load(urllib.request.urlopen(request))\n"
            "print(json.dumps({'access_token': answer['access_token'],"
            " 'expires_in': answer['expires_in']}))\n"
        )
        monkeypatch.setenv("NEXADATA_API_URL", url)
        monkeypatch.setenv("RUNBOOK_STATE_DIR", str(tmp_path / "state"))
        monkeypatch.setenv("NEXADATA_TOKEN", "a-token-that-loses-to-the-command")
        plan = write_plan(tmp_path)
        result = cli("apply", str(plan), "--token-command", f"{sys.executable} {script}")
        counters = stats(app)
    assert result.code == 0, result.out + result.err
    assert counters["executions"] == {"1": 1, "2": 1, "3": 1, "4": 1}
    assert counters["expired_token_401s"] == 0
    assert int(runs.read_text()) == counters["token_requests"]["client_credentials"] >= 5
    assert result.err == (
        f"runbook: note: the token comes from the token command {sys.executable!r} "
        "(--token-command); not used: NEXADATA_TOKEN\n"
    )


def test_a_token_command_without_an_expiry_runs_again_after_a_401(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = tmp_path / "runs"
    script = tmp_path / "token.sh"
    with sandbox(1.0, SEQUENTIAL) as (app, url):
        script.write_text(
            f"echo x >> {runs}\n"
            f"curl --silent --show-error -u sandbox-client:sandbox-secret "
            f"-d grant_type=client_credentials {token_url(url)} | "
            f"{sys.executable} -c "
            "'import json,sys; print(json.load(sys.stdin)[\"access_token\"])'\n"
        )
        monkeypatch.setenv("NEXADATA_API_URL", url)
        monkeypatch.setenv("RUNBOOK_STATE_DIR", str(tmp_path / "state"))
        monkeypatch.setenv("NEXADATA_TOKEN_COMMAND", f"sh {script}")
        result = cli("apply", str(write_plan(tmp_path)), "--report", str(tmp_path / "r.json"))
        counters = stats(app)
    assert result.code == 0, result.out + result.err
    assert counters["executions"] == {"1": 1, "2": 1, "3": 1, "4": 1}
    refused = counters["expired_token_401s"]
    assert refused >= 3  # a token that said no expiry is used until the API refuses it
    assert len(runs.read_text().split()) == counters["token_requests"]["client_credentials"]
    assert json.loads((tmp_path / "r.json").read_text())["auth"] == "command"


def test_a_token_file_rotated_by_another_program_is_picked_up_mid_run(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "token"
    stop = threading.Event()
    with sandbox(1.0, SEQUENTIAL) as (app, url):
        path.write_text(mint(url) + "\n")
        os.chmod(path, 0o600)

        def rotate() -> None:  # what a sidecar agent does: a new token now and then
            while not stop.wait(0.4):
                fresh = tmp_path / "token.new"
                fresh.write_text(mint(url) + "\n")
                os.replace(fresh, path)

        rotator = threading.Thread(target=rotate)
        rotator.start()
        monkeypatch.setenv("NEXADATA_API_URL", url)
        monkeypatch.setenv("RUNBOOK_STATE_DIR", str(tmp_path / "state"))
        try:
            result = cli("apply", str(write_plan(tmp_path)), "--token-file", str(path))
        finally:
            stop.set()
            rotator.join()
        counters = stats(app)
    assert result.code == 0, result.out + result.err
    assert counters["executions"] == {"1": 1, "2": 1, "3": 1, "4": 1}
    assert counters["expired_token_401s"] >= 1  # the old token was refused, then re-read


LONG_LOAD = Scenario(
    default={"queue": 0.0, "duration": 0.1}, workflows={2: {"duration": 1.5, "queue": 0.0}}
)
EXPIRING = "expiring-token-Qw3-distinct"
FRESH = "fresh-token-Rt5-distinct"


def expiring(app):
    """The token EXPIRING stops working once the sandbox has created load's execution
    (its second): a static token that expires mid-run, without a race against the
    clock. FRESH works throughout."""

    async def wrapped(scope, receive, send):
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            given = headers.get(b"authorization", b"").decode()
            if given in (f"Bearer {EXPIRING}", f"Bearer {FRESH}"):
                if given.endswith(EXPIRING) and len(app.state.sandbox.executions) >= 2:
                    headers[b"authorization"] = b"Bearer expired"
                else:
                    headers[b"authorization"] = f"Bearer {TOKEN}".encode()
                scope = {**scope, "headers": list(headers.items())}
        await app(scope, receive, send)

    return wrapped


def test_a_static_token_that_expires_then_the_same_command_again_then_resume(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = write_plan(tmp_path)
    report = tmp_path / "report.json"
    with sandbox(3600, LONG_LOAD, wrap=expiring) as (app, url):
        monkeypatch.setenv("NEXADATA_API_URL", url)
        monkeypatch.setenv("RUNBOOK_STATE_DIR", str(tmp_path / "state"))
        monkeypatch.setenv("NEXADATA_TOKEN", EXPIRING)
        died = cli("apply", str(plan), "--report", str(report))
        assert died.code == 3, died.out + died.err
        lines = died.out.splitlines()
        summary = lines[lines.index(next(x for x in lines if x.startswith("Run 1 of night"))) :]
        assert summary[0].startswith("Run 1 of night failed in ")
        assert summary[1] == (
            "  authentication failed: the API answered 401 (unauthorized); check the "
            "environment variable NEXADATA_TOKEN"
        )
        assert (
            "  in flight: load (workflow 2, execution 2) may still be running on Nexadata"
            in summary
        )
        assert (
            "  not run without a token: release_lock (clean-up, finally); --resume runs them "
            "when their run_if holds" in summary
        )
        resume = f"runbook apply {plan} --resume --state-dir {tmp_path / 'state'}"
        assert summary[-1] == f"Resume with: {resume}"
        document = json.loads(report.read_text())
        assert document["auth_failed"] is True and document["auth"] == "env"
        assert document["in_flight"] == [{"step": "load", "workflow_id": 2, "execution_id": 2}]

        # the natural next move: a new token, the same command; refused, nothing sent
        monkeypatch.setenv("NEXADATA_TOKEN", FRESH)
        sent = stats(app)["requests_total"]
        again = cli("apply", str(plan))
        assert again.code == 4
        assert again.err == (
            "runbook: run 1 of plan 'night' (failed) left executions that may still be running "
            "on Nexadata: load (workflow 2, execution 2). Follow them and run what is left "
            f"with: {resume}; or start a new run anyway with --new-run "
            "(run 1 is then abandoned, its executions left to finish on their own)\n"
        )
        assert stats(app)["requests_total"] == sent

        resumed = cli("apply", str(plan), "--resume")
        counters = stats(app)
    assert resumed.code == 0, resumed.out + resumed.err
    assert "re-attached to execution 2" in resumed.out
    assert counters["executions"] == {"1": 1, "2": 1, "3": 1, "4": 1}  # each once


def test_new_run_abandons_the_run_that_lost_its_token(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = write_plan(tmp_path)
    with sandbox(3600, LONG_LOAD, wrap=expiring) as (app, url):
        monkeypatch.setenv("NEXADATA_API_URL", url)
        monkeypatch.setenv("RUNBOOK_STATE_DIR", str(tmp_path / "state"))
        monkeypatch.setenv("NEXADATA_TOKEN", EXPIRING)
        died = cli("apply", str(plan), "--log-format", "json")
        assert died.code == 3
        events = [json.loads(line) for line in died.out.splitlines()]
        error = next(event for event in events if event["event"] == "error")
        assert error["kind"] == "auth" and error["level"] == "error"
        assert error["in_flight"] == [{"step": "load", "workflow_id": 2, "execution_id": 2}]
        assert events[-1]["event"] == "run_finished" and events[-1]["auth"] == "env"

        # a new run that cannot start (no token) abandons nothing: run 1 stays resumable
        unstarted = cli("apply", str(plan), "--new-run", "--token-command", "false")
        assert unstarted.code == 3 and "abandoned" not in unstarted.err
        assert [r["state"] for r in json.loads(cli("history", "--format", "json").out)] == [
            "failed"
        ]
        monkeypatch.setenv("NEXADATA_TOKEN", TOKEN)  # the sandbox's static token
        fresh = cli("apply", str(plan), "--new-run")
        counters = stats(app)
        history = cli("history", "--format", "json")
        status = cli("status", "1")
    assert fresh.code == 0, fresh.out + fresh.err
    assert fresh.err == (
        "runbook: note: run 1 is abandoned (--new-run): its executions are left to finish on "
        "their own: load (workflow 2, execution 2)\n"
    )
    assert counters["executions"] == {"1": 2, "2": 2, "3": 1, "4": 1}
    assert [run["state"] for run in json.loads(history.out)] == ["succeeded", "abandoned"]
    assert status.out.startswith("Run 1 of night: abandoned")
    assert "token source: env, 0 token refreshes; it ended on an authentication failure" in (
        status.out
    )
    nothing = cli("apply", str(plan), "--resume")
    assert nothing.code == 2  # the abandoned run is not resumed, the latest succeeded


def test_a_timed_out_execution_allows_a_new_run_and_is_noted(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = tmp_path / "t.yaml"
    plan.write_text(
        "version: 1\nname: t\nworkflows:\n"
        "  slow: {workflow_id: 9, timeout: 200ms, poll_interval: 20ms}\n"
    )
    scenario = Scenario(workflows={9: {"queue": 0.0, "duration": 30.0}})
    with sandbox(3600, scenario) as (_, url):
        monkeypatch.setenv("NEXADATA_API_URL", url)
        monkeypatch.setenv("RUNBOOK_STATE_DIR", str(tmp_path / "state"))
        monkeypatch.setenv("NEXADATA_TOKEN", TOKEN)
        first = cli("apply", str(plan))
        second = cli("apply", str(plan))
    assert first.code == 1 and second.code == 1
    assert second.err == (
        "runbook: note: run 1's execution 1 (slow, workflow 9) timed out and may still be "
        "running on Nexadata\n"
    )


def test_configuration_of_the_oauth_client_is_checked_before_anything_is_sent(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = write_plan(tmp_path, grant="client_credentials")
    with sandbox(1.0, SEQUENTIAL) as (app, url):
        monkeypatch.setenv("NEXADATA_API_URL", url)
        monkeypatch.setenv("RUNBOOK_STATE_DIR", str(tmp_path / "state"))
        no_url = cli("apply", str(plan))
        monkeypatch.setenv("NEXADATA_TOKEN_URL", token_url(url))
        no_id = cli("apply", str(plan))
        monkeypatch.setenv("NEXADATA_CLIENT_ID", SANDBOX_CLIENT_ID)
        monkeypatch.setenv("NEXADATA_CLIENT_SECRET", "not-the-secret-Zz9")
        refused = cli("apply", str(plan))
        monkeypatch.setenv("NEXADATA_TOKEN_URL", "http://tokens.example.com/oauth/token")
        insecure = cli("apply", str(plan))
        counters = stats(app)
        history = cli("history")
    assert no_url.code == 3 and no_url.err == (
        "runbook: the plan's api.oauth client has no token URL: set api.oauth.token_url in the "
        "plan or the environment variable NEXADATA_TOKEN_URL (Nexadata shows the token "
        "endpoint with the client's credentials)\n"
    )
    assert no_id.code == 3 and no_id.err == (
        "runbook: the OAuth client's id is not set: set the environment variable "
        "NEXADATA_CLIENT_ID (the plan's api.oauth names it)\n"
    )
    assert refused.code == 3
    assert refused.err.startswith(
        f"runbook: the token endpoint {token_url(url)} refused the client 'sandbox-client' "
        "(HTTP 401, invalid_client"
    )
    assert "not-the-secret" not in refused.err + refused.out
    assert insecure.code == 3 and "refusing to send the client's credentials" in insecure.err
    assert set(counters["requests"]) == {"POST /oauth/token"}  # the API never heard of it
    assert counters["executions_total"] == 0
    assert history.out == "No runs in the journal.\n"  # no run was written


def test_sandbox_token_ttl_runs_the_plan_through_the_simulators_oauth_client(cli, tmp_path):
    plan = write_plan(tmp_path)
    report = tmp_path / "r.json"
    scenario = tmp_path / "s.yaml"
    scenario.write_text("default: {queue: 0, duration: 0.5}\n")
    result = cli(
        "apply",
        str(plan),
        "--sandbox",
        "--token-ttl",
        "0.6s",
        "--scenario",
        str(scenario),
        "--report",
        str(report),
        "--state-dir",
        str(tmp_path / "state"),
    )
    assert result.code == 0, result.out + result.err
    document = json.loads(report.read_text())
    assert document["auth"] == "oauth client_credentials" and document["token_refreshes"] >= 2
    bad = cli("apply", str(plan), "--token-ttl", "2s")
    assert bad.code == 2 and "--token-ttl configures the built-in simulator" in bad.err
    worse = cli("apply", str(plan), "--sandbox", "--token-ttl", "soon")
    assert worse.code == 2 and "--token-ttl: 'soon' is not a duration" in worse.err


# -- processes sharing one OAuth client ------------------------------------------------


def apply_process(plan: Path, env: dict[str, str], *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*entry_point(), "apply", str(plan), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def sharing_env(url: str, app, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "NEXADATA_API_URL": url,
        "NEXADATA_TOKEN_URL": token_url(url),
        "NEXADATA_CLIENT_ID": SANDBOX_CLIENT_ID,
        "NEXADATA_CLIENT_SECRET": SANDBOX_CLIENT_SECRET,
        "NEXADATA_REFRESH_TOKEN": app.state.sandbox.first_refresh_token,
        "RUNBOOK_STATE_DIR": str(tmp_path / "state"),
    }


def test_concurrent_applies_of_different_plans_share_one_rotating_refresh_token(
    tmp_path: Path,
) -> None:
    scenario = Scenario(default={"queue": 0.0, "duration": 0.7})
    with sandbox(0.8, scenario) as (app, url):
        env = sharing_env(url, app, tmp_path)
        plans = [write_plan(tmp_path, f"plan{n}", grant="refresh_token") for n in range(4)]
        processes = [apply_process(plan, env) for plan in plans]
        outcomes = [process.communicate(timeout=120) for process in processes]
        counters = stats(app)
    for process, (out, err) in zip(processes, outcomes, strict=True):
        assert process.returncode == 0, out + err
    assert counters["refresh_token_reuse"] == 0  # no process sent a rotated-away token
    assert counters["token_requests"]["refresh_token"] >= 8
    assert counters["executions_total"] == 16  # each workflow of each plan once
    cache = list((tmp_path / "state" / "credentials").glob("*.json"))
    assert len(cache) == 1 and oct(cache[0].stat().st_mode & 0o777) == "0o600"
    assert app.state.sandbox.first_refresh_token not in cache[0].read_text()


def test_sigkill_between_the_token_answer_and_the_cache_write_is_the_documented_window(
    tmp_path: Path,
) -> None:
    """The token endpoint rotates the refresh token and the process dies before it
    keeps the new one: the next refresh sends the previous one, which a server with
    reuse detection refuses, and runbook says new credentials are needed."""
    victim: list[subprocess.Popen[str]] = []
    rotations = [0]

    def killing(app):
        async def wrapped(scope, receive, send):
            if scope["type"] == "http" and scope["path"] == "/oauth/token" and victim:
                rotations[0] += 1
                if rotations[0] == 2:  # the first refresh inside the run

                    async def dead_send(message):  # the answer is made, never delivered
                        if message["type"] == "http.response.start":
                            victim[0].send_signal(signal.SIGKILL)
                            victim[0].wait()

                    await app(scope, receive, dead_send)
                    return
            await app(scope, receive, send)

        return wrapped

    scenario = Scenario(default={"queue": 0.0, "duration": 1.5})
    with sandbox(1.0, scenario, wrap=killing) as (app, url):
        env = sharing_env(url, app, tmp_path)
        plan = write_plan(tmp_path, grant="refresh_token")
        victim.append(apply_process(plan, env))
        victim[0].communicate(timeout=60)
        assert victim[0].returncode == -signal.SIGKILL
        cache = next((tmp_path / "state" / "credentials").glob("*.json"))
        kept = json.loads(cache.read_text())["refresh_token"]
        resumed = apply_process(plan, env, "--resume")
        out, err = resumed.communicate(timeout=60)
        counters = stats(app)
    assert resumed.returncode == 3, out + err
    assert "new credentials are needed" in err and "invalid_grant" in err
    assert counters["refresh_token_reuse"] == 1  # the rotated-away token came back once
    assert kept not in out + err
    assert [p.name for p in cache.parent.iterdir() if not p.name.endswith((".json", ".lock"))] == []


def test_a_failing_token_command_is_exit_3_before_any_run_is_written(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with sandbox(3600, QUICK) as (app, url):
        monkeypatch.setenv("NEXADATA_API_URL", url)
        monkeypatch.setenv("RUNBOOK_STATE_DIR", str(tmp_path / "state"))
        command = f"{sys.executable} -c \"import sys; sys.exit('vault: sealed')\" --key=s3cr3t"
        failed = cli("apply", str(write_plan(tmp_path)), "--token-command", command)
        history = cli("history")
        counters = stats(app)
    assert failed.code == 3
    assert failed.err == (
        f"runbook: the token command {sys.executable!r} exited with status 1 (its standard "
        "error: vault: sealed)\n"
    )
    assert "s3cr3t" not in failed.out + failed.err
    assert counters["requests_total"] == 0 and history.out == "No runs in the journal.\n"


@pytest.mark.parametrize("damage", ["link", "group-writable", "corrupt", "foreign"])
def test_a_credential_cache_that_cannot_be_trusted_is_exit_5(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    plan = write_plan(tmp_path, grant="refresh_token")
    with sandbox(3600, QUICK) as (app, url):
        client_env(monkeypatch, url, tmp_path)
        monkeypatch.setenv("NEXADATA_REFRESH_TOKEN", app.state.sandbox.first_refresh_token)
        assert cli("apply", str(plan)).code == 0  # the cache now holds a rotated token
        cache = next((tmp_path / "state" / "credentials").glob("*.json"))
        if damage == "link":
            cache.unlink()
            cache.symlink_to(tmp_path / "elsewhere.json")
        elif damage == "group-writable":
            os.chmod(cache, 0o660)
        elif damage == "corrupt":
            cache.write_text('{"refresh_token": ')
        else:
            os.chown(cache, 12345, 12345)
        sent = stats(app)["token_requests"]["refresh_token"]
        refused = cli("apply", str(plan))
        assert stats(app)["token_requests"]["refresh_token"] == sent  # the env's never sent
    assert refused.code == 5, refused.err
    assert str(cache) in refused.err
    assert not (tmp_path / "elsewhere.json").exists()


def test_an_interrupted_sandbox_run_is_no_obstacle_to_the_next_one(tmp_path: Path) -> None:
    """The simulator's executions ended with it: nothing to duplicate, nothing to follow."""
    plan = tmp_path / "p.yaml"
    plan.write_text("version: 1\nname: p\nworkflows:\n  forever: {workflow_id: 5}\n")
    scenario = tmp_path / "s.yaml"
    scenario.write_text("workflows:\n  5: {queue: 0, duration: forever}\n")
    state = str(tmp_path / "state")
    argv = [*entry_point(), "apply", str(plan), "--sandbox", "--scenario", str(scenario)]
    process = subprocess.Popen(
        [*argv, "--state-dir", state], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    for line in process.stdout:
        if "(workflow 5, execution 1): " in line:
            process.send_signal(signal.SIGINT)
            break
    process.communicate(timeout=60)
    assert process.returncode == 130
    scenario.write_text("workflows:\n  5: {queue: 0, duration: 0.1}\n")
    again = subprocess.run(
        [*argv, "--state-dir", state], capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 0, again.stdout + again.stderr


def test_check_never_spends_a_rotating_refresh_token_it_could_not_keep(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refresh token that rotates, and a state dir (whose credential cache keeps the
    new one) that cannot be used: check says the token was not checked and mints none,
    so the next apply's refresh token is still the one the API expects."""
    plan = write_plan(tmp_path, grant="refresh_token")
    with sandbox(60.0, SEQUENTIAL) as (app, url):
        client_env(monkeypatch, url, tmp_path)
        monkeypatch.setenv("NEXADATA_REFRESH_TOKEN", app.state.sandbox.first_refresh_token)
        state = tmp_path / "state"
        state.mkdir(mode=0o700)
        state.chmod(0o777)
        refused = cli("check", str(plan))
        assert refused.code == 5
        assert "not checked: the OAuth client's refresh token rotates" in refused.out
        assert stats(app)["token_requests"]["refresh_token"] == 0
        state.chmod(0o700)
        checked = cli("check", str(plan))
        assert checked.code == 0, checked.out
        assert cli("check", str(plan)).code == 0  # the rotated token was kept: no reuse
        assert stats(app)["refresh_token_reuse"] == 0
