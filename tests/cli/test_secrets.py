"""The token appears nowhere: not in any command's output in any mode, not in a report,
a JUnit file, the journal's bytes or a lock file, not in a traceback — one test that
runs them all with distinctive tokens and scans everything they left behind."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from urllib.parse import quote

import pytest

from runbook.sandbox.app import create_app
from runbook.sandbox.scenario import Scenario
from runbook.sandbox.server import serve_in_thread
from tests.support.entry import run_entry

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


ECHOED = "ech0/t0k+en-Vv2-distinct=="  # with '/' and '+': JSON-escaped and percent forms
FORMS = (ECHOED, ECHOED.replace("/", "\\/"), quote(ECHOED, safe=""), quote(ECHOED))


def echoing_api():
    """An API that hands the token back in every field it can: the state's neighbours,
    errors, warnings, unknown fields and keys, the times, a 400 body in its escaped form
    straddling the 200-character cut of the error message."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    escaped = ECHOED.replace("/", "\\/")
    count = {"n": 0}

    def record(ident: int, state: str, request: Request) -> bytes:
        auth = request.headers.get("authorization", "")
        return (
            f'{{"id": {ident}, "state": "{state}", "start_at": "{escaped}", "end_at": null, '
            f'"errors": ["{escaped} rejected", {{"code": "{escaped}", "message": "{ECHOED}"}}], '
            f'"warnings": ["{quote(ECHOED, safe="")}"], "echo": "{auth}", '
            f'"{ECHOED}": "{quote(ECHOED)}"}}'
        ).encode()

    async def trigger(request: Request) -> Response:
        if request.path_params["workflow_id"] == 2:
            body = "x" * 190 + escaped + " is not allowed here"
            return Response(body.encode(), status_code=400, media_type="application/json")
        count["n"] += 1
        return Response(record(count["n"], "created", request), media_type="application/json")

    async def poll(request: Request) -> Response:
        ident = request.path_params["execution_id"]
        return Response(record(ident, "failed", request), media_type="application/json")

    return Starlette(
        routes=[
            Route("/api/v1/workflows/{workflow_id:int}/execute", trigger, methods=["POST"]),
            Route("/api/v1/workflows/executions/{execution_id:int}", poll, methods=["GET"]),
        ]
    )


def test_a_token_the_api_echoes_in_any_field_or_form_shows_nowhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = tmp_path / "echo.yaml"
    plan.write_text(
        "version: 1\nname: echo\ndefaults: {poll_interval: 20ms, max_poll_interval: 50ms}\n"
        "workflows:\n  a: {workflow_id: 1, on_failure: continue}\n  b: {workflow_id: 2}\n"
    )
    monkeypatch.setenv("NEXADATA_TOKEN", ECHOED)
    monkeypatch.setenv("RUNBOOK_STATE_DIR", str(tmp_path / "state"))
    outputs = []
    with serve_in_thread(echoing_api()) as url:
        monkeypatch.setenv("NEXADATA_API_URL", url)
        for argv in (
            (
                "apply",
                str(plan),
                "--report",
                str(tmp_path / "r.json"),
                "--junit",
                str(tmp_path / "j.xml"),
            ),
            ("apply", str(plan), "--log-format", "json"),
            ("status",),
            ("status", "--format", "json"),
            ("history",),
        ):
            result = run_entry(*argv)
            assert result.code in (0, 1), (argv, result.err)
            outputs += [result.out, result.err]
    assert "***" in outputs[0]  # the echoes were there, and were redacted
    files = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert {p.name for p in files} >= {"r.json", "j.xml", "journal.sqlite3"}
    for form in FORMS:
        for text in outputs:
            assert form not in text, (form, text[:3000])
        for path in files:
            data = path.read_bytes()
            assert form.encode() not in data, (form, path)
            assert json.dumps(form).encode()[1:-1] not in data, (form, path)


HOOK_SECRET = "hook-5ecret-P4th"
QUERY_SECRET = "qu3ry-5ecret"
PING_SECRET = "ping-5ecret-uuid"


def test_no_webhook_or_ping_url_shows_and_no_receiver_sees_the_token(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A webhook's path and query, a ping URL's check id: in no output, report, JUnit
    file, journal byte or traceback, whether the receiver answers or fails; and the
    Nexadata token in no request a receiver gets."""
    from tests.support.receiver import Receiver

    plan = tmp_path / "notified.yaml"
    plan.write_text(
        PLAN.replace(
            "workflows:",
            "notify:\n  - {on: [succeeded, failed], webhook_env: HOOK}\n"
            "  - {on: [failed], webhook_env: SLACK, format: slack}\n"
            "healthchecks: {ping_url_env: HC}\nworkflows:",
        )
    )
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setenv("NEXADATA_TOKEN", TOKEN)
    monkeypatch.setenv("RUNBOOK_STATE_DIR", str(tmp_path / "state"))
    scenario = Scenario(
        default={"queue": 0.0, "duration": 0.05}, workflows={3: {"outcome": "failed"}}
    )
    outputs: list[str] = []
    seen = []
    with serve_in_thread(create_app(scenario, token=TOKEN)) as url:
        monkeypatch.setenv("NEXADATA_API_URL", url)
        for answer in ("ok", 404, "reset"):
            with Receiver(default=answer) as receiver:
                monkeypatch.setenv("HOOK", receiver.url(f"/{HOOK_SECRET}/x?sig={QUERY_SECRET}"))
                monkeypatch.setenv("SLACK", receiver.url(f"/services/{HOOK_SECRET}"))
                monkeypatch.setenv("HC", receiver.url(f"/{PING_SECRET}"))
                for argv in (
                    [
                        "apply",
                        str(plan),
                        "--report",
                        str(out / f"{answer}.json"),
                        "--junit",
                        str(out / f"{answer}.xml"),
                    ],
                    ["--traceback", "apply", str(plan), "--log-format", "json"],
                    ["apply", str(plan), "-q"],
                )[: 1 if answer == "reset" else 3]:  # fmt: skip (a reset is tried 3 times)
                    result = run_entry(*argv)
                    assert result.code == 1, result.err
                    outputs += [result.out, result.err]
                seen += receiver.received
        for argv in (["status"], ["status", "--format", "json"], ["history"]):
            result = run_entry(*argv)
            outputs += [result.out, result.err]

        # a bug inside a delivery, with the URL in scope: recorded, the run unchanged
        async def broken_attempt(transport, url, *args):
            raise RuntimeError(f"delivery bug at {url!r}")

        monkeypatch.setattr("runbook.notify.delivery._attempt", broken_attempt)
        monkeypatch.setenv("HOOK", f"http://127.0.0.1:9/{HOOK_SECRET}")
        crashed = cli("--traceback", "apply", str(plan), "--report", str(out / "bug.json"))
        assert crashed.code == 1
        assert "an unexpected error in runbook (RuntimeError); please report it" in crashed.err
        outputs += [crashed.out, crashed.err]
    assert len(seen) >= 7 * 3  # every apply: the webhooks and the pings
    assert any(r.target.startswith(f"/{HOOK_SECRET}/x?sig=") for r in seen)
    for request in seen:
        raw = request.target + json.dumps(request.headers) + request.body.decode()
        assert TOKEN not in raw and "authorization" not in request.headers
    files = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert {p.name for p in files} >= {"ok.json", "404.xml", "journal.sqlite3", "bug.json"}
    for secret in (HOOK_SECRET, QUERY_SECRET, PING_SECRET):
        for number, text in enumerate(outputs):
            assert secret not in text, (secret, number, text[:2000])
        for path in files:
            assert secret.encode() not in path.read_bytes(), (secret, path)


CLIENT_SECRET = "cl1ent-5ecret-Mm4-distinct"


def hostile(app, seen: list[str]):
    """The sandbox, made to echo every secret it was ever sent back in every answer: the
    API's (errors, unknown fields) and the token endpoint's (a description) alike. A
    token rotated away an hour ago comes back too."""

    async def wrapped(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        body = b""

        async def reading():
            nonlocal body
            message = await receive()
            body += message.get("body", b"")
            return message

        for name, value in scope["headers"]:
            if name == b"authorization":
                seen.append(value.decode().split(" ", 1)[1])
        start: dict = {}

        async def echoing(message):
            if message["type"] == "http.response.start":
                start.update(message)
                return
            text = message.get("body", b"")
            seen.extend(value for pair in body.decode().split("&") for value in pair.split("=")[1:])
            try:
                document = json.loads(text)
            except ValueError:
                document = None
            if isinstance(document, dict):
                echoes = sorted(set(seen))
                if "access_token" in document:
                    document["error_description"] = " ".join(echoes)
                else:
                    document["echo"] = echoes
                    document["errors"] = (
                        [" ".join(echoes)] if document.get("state") == "failed" else []
                    )
                text = json.dumps(document).encode()
            headers = [(k, v) for k, v in start.get("headers", []) if k != b"content-length"]
            headers.append((b"content-length", str(len(text)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": text})

        await app(scope, reading, echoing)

    return wrapped


def test_no_client_secret_refresh_or_access_token_the_process_held_shows_anywhere(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An OAuth client with a rotating refresh token over runs longer than its tokens,
    against an API and token endpoint that echo every secret they were ever sent: the
    client secret, every refresh and access token appear in no output, report, JUnit file
    or journal byte; the credential cache holds the latest refresh token and nothing
    else."""
    from runbook.sandbox import SandboxOAuth

    plan = tmp_path / "oauth.yaml"
    plan.write_text(PLAN.replace("workflows:", "api:\n  oauth: {grant: refresh_token}\nworkflows:"))
    out = tmp_path / "out"
    out.mkdir()
    scenario = Scenario(
        default={"queue": 0.0, "duration": 0.4},
        workflows={2: {"fail_first": 1}, 3: {"outcome": "failed", "errors": ["bad rows"]}},
    )
    app = create_app(
        scenario, token=TOKEN, oauth=SandboxOAuth(token_ttl=0.3, client_secret=CLIENT_SECRET)
    )
    seen: list[str] = []
    outputs: list[str] = []
    with serve_in_thread(hostile(app, seen)) as url:
        monkeypatch.setenv("NEXADATA_API_URL", url)
        monkeypatch.setenv("NEXADATA_TOKEN_URL", url.removesuffix("/api/v1") + "/oauth/token")
        monkeypatch.setenv("NEXADATA_CLIENT_ID", "sandbox-client")
        monkeypatch.setenv("NEXADATA_CLIENT_SECRET", CLIENT_SECRET)
        monkeypatch.setenv("NEXADATA_REFRESH_TOKEN", app.state.sandbox.first_refresh_token)
        monkeypatch.setenv("RUNBOOK_STATE_DIR", str(tmp_path / "state"))
        for argv in (
            ["apply", str(plan), "--report", str(out / "r.json"), "--junit", str(out / "j.xml")],
            ["--traceback", "apply", str(plan), "--log-format", "json"],
            ["status"],
            ["status", "--format", "json"],
            ["history"],
        ):
            seen.clear()  # what this process sent: another one's tokens it never held
            result = run_entry(*argv)
            outputs += [result.out, result.err]
            assert result.code in (0, 1), (argv, result.out, result.err)
        stats = app.state.sandbox.stats()
        issued = list(app.state.sandbox.issuer._tokens)  # every token it ever issued
    assert stats["token_requests"]["refresh_token"] >= 6 and stats["refresh_token_reuse"] == 0
    assert "***" in outputs[0]  # the echoes were there, and were redacted
    basic = base64.b64encode(f"sandbox-client:{CLIENT_SECRET}".encode()).decode()
    secrets = [CLIENT_SECRET, basic, *issued]
    assert len(issued) >= 12
    cache = next((tmp_path / "state" / "credentials").glob("*.json"))
    cached = json.loads(cache.read_text())
    assert set(cached) == {"version", "refresh_token", "issued_at", "env_sha256"}
    assert cached["refresh_token"] in issued
    files = [path for path in tmp_path.rglob("*") if path.is_file() and path != cache]
    assert {p.name for p in files} >= {"r.json", "j.xml", "journal.sqlite3"}
    for secret in secrets:
        for number, text in enumerate(outputs):
            assert secret not in text, (number, text[:2000])
        for path in files:
            assert secret.encode() not in path.read_bytes(), path
        if secret != cached["refresh_token"]:
            assert secret.encode() not in cache.read_bytes()
