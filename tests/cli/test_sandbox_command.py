"""``runbook sandbox`` as a user runs it: a real process, curl, and Ctrl-C."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.support.entry import entry_point, run_entry
from tests.support.paths import DATA


def start(*argv: str) -> tuple[subprocess.Popen[str], list[str]]:
    process = subprocess.Popen(
        [*entry_point(), "sandbox", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    banner = []
    for line in process.stdout:
        banner.append(line.rstrip("\n"))
        if line.startswith("Press Ctrl-C"):
            break
    return process, banner


def curl(command: str) -> dict:
    assert shutil.which("curl"), "curl is needed to run the article's commands"
    done = subprocess.run(
        command + " --silent --show-error",
        shell=True,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return json.loads(done.stdout)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_banner_curl_and_clean_stop(sig: signal.Signals) -> None:
    process, banner = start("--port", "0")
    try:
        url = banner[1].split()[-1]
        assert banner[0] == "runbook sandbox: a simulated Nexadata API (default scenario)"
        assert url.startswith("http://127.0.0.1:") and url.endswith("/api/v1")
        assert banner[2] == "  token     sandbox"
        trigger_line, poll_line = (line.strip() for line in banner if "curl" in line)
        assert trigger_line == (
            f"curl -X POST {url}/workflows/29/execute "
            '-H "Authorization: Bearer sandbox" '
            '-H "Content-Type: application/json"'
        )
        created = curl(trigger_line)
        assert created["state"] == "created" and isinstance(created["id"], int)
        polled = curl(poll_line.replace("/executions/1", f"/executions/{created['id']}"))
        assert polled["id"] == created["id"]
        assert polled["state"] in ("created", "running")
        assert set(polled) >= {"id", "state", "start_at", "end_at", "errors", "warnings"}
    finally:
        process.send_signal(sig)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0
    assert out == "runbook sandbox: stopped\n"
    assert "Traceback" not in err


def test_scenario_is_used(tmp_path: Path) -> None:
    process, banner = start(
        "--port", "0", "--scenario", str(DATA / "scenarios" / "every_key.yaml"), "--token", "t0k"
    )
    try:
        url = banner[1].split()[-1]
        assert banner[0].endswith("every_key.yaml)")
        auth = '-H "Authorization: Bearer t0k"'
        answer = curl(f"curl -X POST {url}/workflows/99/execute {auth}")
        assert answer == {"error": "workflow 99 not found"}
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)


def test_invalid_scenario_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("faults: {error_rate: 2}\n")
    result = run_entry("sandbox", "--scenario", str(bad))
    assert result.code == 2
    assert result.err == (
        f"{bad}:1:22: faults.error_rate: 2 is greater than the maximum, 1\n"
        f"{bad}: invalid scenario (1 problem)\n"
    )
    assert result.out == ""


def test_port_in_use_exits_2() -> None:
    process, banner = start("--port", "0")
    try:
        port = banner[1].split()[-1].split(":")[2].split("/")[0]
        result = run_entry("sandbox", "--port", port)
        assert result.code == 2
        assert result.err == (
            f"runbook: cannot listen on 127.0.0.1:{port}: Address already in "
            "use; choose another --port (0 takes a free one)\n"
        )
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--token", "two words"), "runbook: --token must be one word of printable ASCII\n"),
        (("--port", "70000"), "Error: Invalid value for '--port': 70000 is not in the range"),
        (("--token-ttl", "0s"), "runbook: --token-ttl: '0s' is not more than 0 (e.g. 2s, 1h)\n"),
        (
            ("--token-ttl", "soon"),
            "runbook: --token-ttl: 'soon' is not a duration: expected a number of seconds",
        ),
        (
            ("--client-id", "me"),
            "runbook: --client-id needs --token-ttl (the OAuth client is off without it)\n",
        ),
        (
            ("--client-secret", "s"),
            "runbook: --client-secret needs --token-ttl (the OAuth client is off without it)\n",
        ),
        (
            ("--token-ttl", "1s", "--client-secret", "two words"),
            "runbook: --client-secret must be one word of printable ASCII\n",
        ),
        (
            ("--token-ttl", "1s", "--client-id", "caf\u00e9"),
            "runbook: --client-id must be one word of printable ASCII\n",
        ),
    ],
)
def test_bad_flags(argv: tuple[str, ...], message: str) -> None:
    result = run_entry("sandbox", *argv)
    assert result.code == 2
    assert message in result.err


def test_beyond_loopback_the_default_token_is_refused() -> None:
    result = run_entry("sandbox", "--host", "0.0.0.0", "--port", "0")
    assert result.code == 2
    assert result.err == (
        "runbook: --host 0.0.0.0 serves beyond this machine: choose a token of your own "
        "with --token (everyone knows the default, 'sandbox')\n"
    )


def test_beyond_loopback_the_default_client_secret_is_refused() -> None:
    result = run_entry("sandbox", "--host", "0.0.0.0", "--token", "t0k-own", "--token-ttl", "1h")
    assert result.code == 2
    assert result.err == (
        "runbook: --host 0.0.0.0 serves beyond this machine: choose a client secret of your "
        "own with --client-secret (everyone knows the default, 'sandbox-secret')\n"
    )


def test_beyond_loopback_a_working_url_a_warning_and_private_stats() -> None:
    process, banner = start("--host", "0.0.0.0", "--port", "0", "--token", "t0k-own")
    try:
        url = banner[1].split()[-1]
        assert url.startswith("http://127.0.0.1:")  # what apply accepts over http
        stats = url.removesuffix("/api/v1") + "/__sandbox/stats"
        denied = subprocess.run(
            ["curl", "--silent", "--output", "/dev/null", "--write-out", "%{http_code}", stats],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert denied.stdout == "401"
        assert "requests_total" in curl(f'curl {stats} -H "Authorization: Bearer t0k-own"')
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    assert err.startswith(
        "runbook sandbox: warning: listening on 0.0.0.0, beyond loopback: whoever can reach "
        "this port and has the token can use it (its stats need the token too)\n"
    )


def test_token_ttl_banner_then_a_token_by_curl_and_by_httpx() -> None:
    process, banner = start("--port", "0", "--token-ttl", "1.5s")
    try:
        url = banner[1].split()[-1]
        root = url.removesuffix("/api/v1")
        token_url = f"{root}/oauth/token"
        refresh_token = banner[7].split()[-1]
        assert len(refresh_token) >= 32
        assert banner == [
            "runbook sandbox: a simulated Nexadata API (default scenario)",
            f"  base URL       {url}",
            "  token          sandbox",
            f"  stats          {root}/__sandbox/stats",
            f"  token URL      {token_url}",
            "  client id      sandbox-client",
            "  client secret  sandbox-secret",
            f"  refresh token  {refresh_token}",
            "  token TTL      1.5s",
            "",
            "Try it:",
            f"  curl -X POST {url}/workflows/29/execute "
            '-H "Authorization: Bearer sandbox" -H "Content-Type: application/json"',
            f'  curl {url}/workflows/executions/1 -H "Authorization: Bearer sandbox"',
            f"  curl -u sandbox-client:sandbox-secret -d grant_type=client_credentials {token_url}",
            "",
            "Run a plan against it:",
            f"  NEXADATA_TOKEN=sandbox runbook apply PLAN --api-url {url}",
            "  NEXADATA_CLIENT_ID=sandbox-client NEXADATA_CLIENT_SECRET=sandbox-secret "
            f"NEXADATA_TOKEN_URL={token_url} runbook apply PLAN --api-url {url}",
            "  (that one needs an api.oauth mapping in the plan; with its grant "
            "refresh_token, set NEXADATA_REFRESH_TOKEN to the refresh token above)",
            "",
            "Press Ctrl-C to stop.",
        ]
        by_curl = curl(banner[13].strip())
        assert by_curl["token_type"] == "Bearer" and by_curl["expires_in"] == 1.5
        with httpx.Client(timeout=30) as http:
            bearer = {"Authorization": f"Bearer {by_curl['access_token']}"}
            assert http.post(f"{url}/workflows/29/execute", headers=bearer).status_code == 200
            refreshed = http.post(
                token_url,
                data={"grant_type": "refresh_token", "refresh_token": refresh_token},
                auth=("sandbox-client", "sandbox-secret"),
            )
            assert refreshed.status_code == 200, refreshed.text
            assert refreshed.headers["cache-control"] == "no-store"
            bearer = {"Authorization": f"Bearer {refreshed.json()['access_token']}"}
            assert http.get(f"{url}/workflows/executions/1", headers=bearer).status_code == 200
            stats = http.get(f"{root}/__sandbox/stats").json()
        assert stats["token_requests"] == {"client_credentials": 1, "refresh_token": 1}
        assert stats["refresh_token_reuse"] == 0 and stats["expired_token_401s"] == 0
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    assert out == "runbook sandbox: stopped\n" and "Traceback" not in err


def test_a_client_of_ones_own_by_the_body() -> None:
    process, banner = start(
        "--port", "0", "--token-ttl", "1h", "--client-id", "me", "--client-secret", "s3cr3t"
    )
    try:
        token_url = banner[4].split()[-1]
        assert banner[5:7] == ["  client id      me", "  client secret  s3cr3t"]
        assert banner[8] == "  token TTL      1h"
        form = {"grant_type": "client_credentials", "client_id": "me", "client_secret": "s3cr3t"}
        with httpx.Client(timeout=30) as http:
            issued = http.post(token_url, data=form)
            refused = http.post(token_url, data={**form, "client_secret": "sandbox-secret"})
        assert issued.status_code == 200 and issued.json()["expires_in"] == 3600
        assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)


def test_without_token_ttl_there_is_no_token_endpoint() -> None:
    process, banner = start("--port", "0")
    try:
        root = banner[1].split()[-1].removesuffix("/api/v1")
        assert not any("oauth" in line or "client" in line for line in banner)
        answer = httpx.post(f"{root}/oauth/token", data={"grant_type": "client_credentials"})
        assert answer.status_code == 404
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
