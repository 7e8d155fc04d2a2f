"""``runbook check`` through the command line, against loopback servers: every problem
in one pass, the exit code of the first kind, and never a trigger."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from runbook.journal import PlanLock
from runbook.sandbox.scenario import Scenario
from tests.support.night import PLAN, TOKEN, executions
from tests.support.receiver import Receiver
from tests.support.servers import closed_port

NOTIFYING = PLAN + (
    "notify:\n  - {webhook_env: HOOK}\n  - {webhook_env: CHAT, format: slack}\n"
    "healthchecks: {ping_url_env: HC}\n"
)


def _lines(out: str) -> dict[str, tuple[str, str]]:
    """Each finding's line, by what it checked: (level, text)."""
    found = {}
    for line in out.splitlines()[:-1]:
        match = re.fullmatch(r"(ok|warning|PROBLEM) +(\S+(?: \S+)*) {2,}(.*)", line)
        assert match, line
        found[match[2]] = (match[1], match[3])
    return found


def test_all_holds_and_nothing_is_triggered(cli, api, plan: Path) -> None:
    app = api(Scenario())
    result = cli("check", str(plan))
    assert result.code == 0, result.out + result.err
    found = _lines(result.out)
    assert [level for level, _ in found.values()] == ["ok"] * 5
    assert found["API"][1].endswith("answers, and accepts the token")
    assert found["token"] == ("ok", "from the environment variable NEXADATA_TOKEN")
    assert result.out.splitlines()[-1] == "All 5 checks passed: plan 'night' is ready to apply"
    stats = app.state.sandbox.stats()
    assert executions(app) == {} and stats["requests_total"] == 1  # the one poll of 0
    assert TOKEN not in result.out + result.err


def test_every_problem_in_one_pass_and_the_first_kinds_exit_code(
    cli, api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = api(Scenario())
    monkeypatch.delenv("NEXADATA_TOKEN")
    plan = tmp_path / "night.yaml"
    plan.write_text(NOTIFYING)
    lock = PlanLock(Path(os.environ["RUNBOOK_STATE_DIR"]), "night")
    Path(os.environ["RUNBOOK_STATE_DIR"]).mkdir(mode=0o700)
    lock.acquire()
    try:
        result = cli("check", str(plan), "--metrics-dir", str(tmp_path / "nowhere"))
    finally:
        lock.release()
    found = _lines(result.out)
    assert found["lock"] == ("PROBLEM", "an apply of this plan is running now")
    assert found["metrics dir"][0] == "PROBLEM"  # a usage error: its exit code is 2
    assert found["notify[0]"] == (
        "PROBLEM",
        "the environment variable HOOK is not set or empty",
    )
    assert found["notify[1]"][0] == found["healthchecks"][0] == "PROBLEM"
    assert found["token"][0] == "PROBLEM" and "NEXADATA_TOKEN" in found["token"][1]
    assert result.out.splitlines()[-1].endswith("found a problem (exit 2)")
    assert result.code == 2  # the metrics dir's usage error comes first: 2, 3, 4, 5
    assert app.state.sandbox.stats()["requests_total"] == 0


def test_a_refused_token_a_wrong_url_and_an_api_out_of_reach_are_exit_3(
    cli, api, plan: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = api(Scenario())
    url = os.environ["NEXADATA_API_URL"]
    monkeypatch.setenv("NEXADATA_TOKEN", "not-the-token")
    refused = cli("check", str(plan))
    assert refused.code == 3
    assert _lines(refused.out)["API"][1].startswith("authentication failed: the API answered 401")
    monkeypatch.setenv("NEXADATA_TOKEN", TOKEN)
    # the sandbox's root is no API: the path's hint, a warning that keeps 0
    bare = cli("check", str(plan), "--api-url", url.removesuffix("/api/v1"))
    assert bare.code == 0, bare.out
    assert _lines(bare.out)["API"][0] == "ok"
    assert "is the base URL right? It usually ends in /api/v1" in _lines(bare.out)["API URL"][1]
    with Receiver() as web:  # a web server answering 200 to everything
        page = cli("check", str(plan), "--api-url", web.url("/api/v1"))
    assert page.code == 3
    assert "is the base URL right?" in _lines(page.out)["API"][1]
    gone = cli("check", str(plan), "--api-url", f"http://127.0.0.1:{closed_port()}/api/v1")
    assert gone.code == 3
    assert "could not be reached" in _lines(gone.out)["API"][1]
    assert executions(app) == {}


def test_notify_sends_a_test_message_to_every_webhook_and_no_ping(
    cli, api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api(Scenario())
    plan = tmp_path / "night.yaml"
    plan.write_text(NOTIFYING)
    with Receiver() as hooks, Receiver() as pings:
        monkeypatch.setenv("HOOK", hooks.url("/json"))
        monkeypatch.setenv("CHAT", hooks.url("/chat"))
        monkeypatch.setenv("HC", pings.url("/ping/uuid"))
        quiet = cli("check", str(plan))
        assert quiet.code == 0 and hooks.received == []  # without --notify, nothing sent
        result = cli("check", str(plan), "--notify")
        assert result.code == 0, result.out
        received = {r.target: r.json() for r in hooks.wait_for(2)}
        assert pings.received == []  # a ping would change the check's state
    assert received["/json"]["event"] == "test" and received["/json"]["test"] is True
    assert received["/chat"]["text"].startswith("runbook check: a test message for plan `night`")
    assert _lines(result.out)["notify[0]"][1].endswith("a test message was delivered")


def test_a_journal_that_cannot_be_used_is_exit_5(cli, api, plan: Path, tmp_path: Path) -> None:
    api(Scenario())
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    state.chmod(0o777)
    result = cli("check", str(plan))
    assert result.code == 5
    assert _lines(result.out)["state dir"][0] == "PROBLEM"


def test_an_invalid_plan_is_exit_2_with_every_problem(cli, tmp_path: Path) -> None:
    plan = tmp_path / "bad.yaml"
    plan.write_text("version: 1\nworkflows: {a: {workflow_id: x, depends_on: b}}\n")
    result = cli("check", str(plan))
    assert result.code == 2
    assert result.err.count(f"{plan}:2:") == 2


def test_apply_to_an_api_out_of_reach_is_exit_3_with_no_clean_up_started(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runbook.api.pacing import RetryPolicy

    monkeypatch.setattr(RetryPolicy, "backoff", lambda self, attempt, rng: 0.0)  # no waits
    monkeypatch.setenv("NEXADATA_TOKEN", TOKEN)
    monkeypatch.setenv("RUNBOOK_STATE_DIR", str(tmp_path / "state"))
    plan = tmp_path / "night.yaml"
    plan.write_text(PLAN + "  rollback: {workflow_id: 9, depends_on: load, run_if: failure}\n")
    url = f"http://127.0.0.1:{closed_port()}/api/v1"
    result = cli("apply", str(plan), "--api-url", url)
    assert result.code == 3, result.out + result.err
    assert f"the API at {url} could not be reached" in result.out
    assert "(gave up after 8 tries, and no request of this run got an answer)" in result.out
    assert "rollback" in result.out and "not started: the run stopped" in result.out
    (resume,) = [line for line in result.out.splitlines() if line.startswith("Resume with:")]
    assert resume.startswith(f"Resume with: runbook apply {plan} --resume")
    assert resume.endswith(f"--api-url {url}")


def test_a_trigger_answered_404_at_a_url_without_api_v1_says_so(cli, api, plan: Path) -> None:
    app = api(Scenario())
    url = os.environ["NEXADATA_API_URL"].removesuffix("/api/v1")
    result = cli("apply", str(plan), "--api-url", url)
    assert result.code == 1
    assert (
        "workflow 1 not found, or not in this token's organization; or is the base URL "
        "right? It usually ends in /api/v1"
    ) in result.out
    assert executions(app) == {}


def test_a_web_servers_not_found_page_is_not_the_api(cli, plan: Path, monkeypatch) -> None:
    from tests.support.servers import raw_server

    monkeypatch.setenv("NEXADATA_TOKEN", TOKEN)
    page = b"<html><body>Not Found</body></html>"
    answer = (
        b"HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\n"
        + f"Content-Length: {len(page)}\r\nConnection: close\r\n\r\n".encode()
        + page
    )
    with raw_server("answer", answer) as (url, received):
        result = cli("check", str(plan), "--api-url", url)
    assert result.code == 3
    assert _lines(result.out)["API"][1] == (
        f"{url} answered with a web page (404): is the base URL right? It usually ends in /api/v1"
    )
    assert len(received) == 1 and received[0].startswith(b"GET /api/v1/workflows/executions/0 ")


@pytest.mark.parametrize(
    "url",
    [
        "https://a..b/api/v1",
        "https://" + "x" * 64 + ".example/api/v1",
        "http://127.0.0.1:9/\x1b[31m",
    ],
)
def test_an_api_url_that_cannot_be_read_is_exit_3_not_a_crash(
    cli, plan: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("NEXADATA_TOKEN", TOKEN)
    for command in ("check", "apply"):
        result = cli(command, str(plan), "--api-url", url)
        assert result.code == 3, (command, result.out + result.err)
        assert "cannot be read (check its host name and port)" in result.out + result.err
        assert "\x1b" not in result.out + result.err
