"""The sandbox under an independent API tester: Schemathesis, every check, against a
real ``runbook sandbox`` process (its OAuth token endpoint on) and the OpenAPI document
the repository ships."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import yaml

from runbook.sandbox import SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, SANDBOX_TOKEN, SandboxOAuth
from tests.cli.test_sandbox_command import start
from tests.support.paths import ROOT

DOCUMENT = ROOT / "runbook" / "sandbox" / "openapi.yaml"

# Each operation gets the credentials its security names: the Bearer token for the
# API, the OAuth client's Basic credentials for the token endpoint. A token request
# can be valid by the schema and still refused with 400 (RFC 6749 section 5.2): a
# refresh token is not one the server issued, or one used before (invalid_grant), or
# the body's client_secret makes a second client authentication (invalid_request).
CONFIG = f"""
[auth.openapi.bearer]
bearer = "{SANDBOX_TOKEN}"

[auth.openapi.clientBasic]
username = "{SANDBOX_CLIENT_ID}"
password = "{SANDBOX_CLIENT_SECRET}"

[[operations]]
include-path = "/oauth/token"
checks.positive_data_acceptance.expected-statuses = ["200", "400", "401"]
"""


def schemathesis() -> list[str]:
    script = Path(sys.executable).parent / "schemathesis"
    return [str(script)] if script.exists() else [shutil.which("schemathesis") or "st"]


def test_the_document_names_the_routes_the_sandbox_serves() -> None:
    from runbook.sandbox.app import create_app

    document = yaml.safe_load(DOCUMENT.read_text())
    served = {
        route.path.replace(":int}", "}")
        for route in create_app(oauth=SandboxOAuth(60)).routes
        if "pipelines" not in route.path and not route.path.startswith("/__sandbox")
    }
    assert {path.replace("{id}", "{workflow_id}") for path in document["paths"]} == served
    assert "/oauth/token" in served


def test_schemathesis_finds_nothing_with_every_check(tmp_path: Path) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    process, banner = start("--port", "0", "--token-ttl", "1h")
    try:
        root = banner[1].split()[-1].removesuffix("/api/v1")
        done = subprocess.run(
            [
                *schemathesis(),
                "--config-file",
                str(config),
                "run",
                str(DOCUMENT),
                "--url",
                root,
                "--checks",
                "all",
                "--seed",
                "20261202",
                "--max-examples",
                "60",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=110,
        )
        stats = httpx.get(f"{root}/__sandbox/stats", timeout=30).json()
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "No issues found" in done.stdout
    assert " passed" in done.stdout and " failed" not in done.stdout
    # the token endpoint was reached with the right credentials, and its link followed
    assert stats["requests"]["POST /oauth/token"]["200"] > 0
    assert stats["token_requests"]["refresh_token"] > 0
