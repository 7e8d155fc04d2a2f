"""The token appears nowhere: not in any command's output in any mode, not in a report,
a JUnit file, the journal's bytes or a lock file, not in a traceback — one test that
runs them all with distinctive tokens and scans everything they left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from runbook.sandbox.app import create_app
from runbook.sandbox.scenario import Scenario
from runbook.sandbox.server import serve_in_thread
from tests.conftest import run_entry

TOKEN = "tok-5ecret-Q9z7-runbook-distinct"
WRONG = "wrong-5ecret-K3p1-distinct"  # a token the API refuses: it must not show either
PLAN = """\
version: 1
name: secrets
defaults: {poll_interval: 20ms, max_poll_interval: 50ms, retry_delay: 10ms}
workflows:
  extract: {workflow_id: 1}
  load: {workflow_id: 2, depends_on: extract, retries: 1}
  broken: {workflow_id: 3, on_failure: continue}
"""


def test_no_token_in_any_output_file_journal_or_traceback(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = tmp_path / "secrets.yaml"
    plan.write_text(PLAN)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setenv("NEXADATA_TOKEN", TOKEN)
    monkeypatch.setenv("RUNBOOK_STATE_DIR", str(tmp_path / "state"))
    scenario = Scenario(
        default={"queue": 0.0, "duration": 0.05},
        workflows={2: {"fail_first": 1}, 3: {"outcome": "failed", "errors": ["bad rows"]}},
    )
    outputs: list[str] = []
    with serve_in_thread(create_app(scenario, token=TOKEN)) as url:
        monkeypatch.setenv("NEXADATA_API_URL", url)
        commands = [
            ["validate", str(plan)],
            ["plan", str(plan)],
            ["plan", str(plan), "--format", "json"],
            ["graph", str(plan)],
            ["graph", str(plan), "--format", "mermaid"],
            ["apply", str(plan), "--report", str(out / "r.json"), "--junit", str(out / "j.xml")],
            ["apply", str(plan), "--log-format", "json", "--token-file", str(token_file)],
            ["apply", str(plan), "--resume", "-q"],
            ["apply", str(plan), "--sandbox", "--report", str(out / "sandbox.json")],
            ["status"],
            ["status", "--format", "json"],
            ["status", "1"],
            ["history"],
            ["history", "secrets", "--format", "json"],
            ["--traceback", "apply", str(plan), "--api-url", "http://example.com/api/v1"],
        ]
        for argv in commands:
            result = run_entry(*argv)
            outputs += [result.out, result.err]
            assert result.code in (0, 1, 3), (argv, result.err)
        # a token the API refuses, from the environment and from a file
        monkeypatch.setenv("NEXADATA_TOKEN", WRONG)
        refused = run_entry("apply", str(plan), "--report", str(out / "refused.json"))
        assert refused.code == 3 and "authentication failed" in refused.out + refused.err
        outputs += [refused.out, refused.err]
        token_file.write_text(WRONG)
        refused = run_entry("--traceback", "apply", str(plan), "--token-file", str(token_file))
        assert refused.code == 3
        outputs += [refused.out, refused.err]
        # a bug deep in a request, with the token in scope: the traceback shows none of it
        monkeypatch.setenv("NEXADATA_TOKEN", TOKEN)

        async def broken_transport(self, request):
            raise RuntimeError(f"transport bug at {request!r} with {request.headers!r}")

        monkeypatch.setattr(
            "runbook.transport.AiohttpTransport.handle_async_request", broken_transport
        )
        crashed = cli("--traceback", "apply", str(plan), "--state-dir", str(tmp_path / "s2"))
        assert crashed.code == 70
        assert "Traceback (most recent call last)" in crashed.err
        assert "transport bug at <Request('POST'" in crashed.err
        outputs += [crashed.out, crashed.err]
    files = [path for path in tmp_path.rglob("*") if path.is_file() and path != token_file]
    assert {p.name for p in files} >= {"r.json", "j.xml", "journal.sqlite3", "refused.json"}
    for secret in (TOKEN, WRONG):
        for number, text in enumerate(outputs):
            assert secret not in text, (secret, number, text[:2000])
        for path in files:
            assert secret.encode() not in path.read_bytes(), (secret, path)
