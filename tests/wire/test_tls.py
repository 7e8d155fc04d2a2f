"""TLS: runbook verifies the API's certificate, always. A certificate from a private CA
on a loopback HTTPS sandbox is refused at once (exit 3, before any request reaches the
app), whatever the environment says; trusting it takes an explicit CA bundle."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from runbook.sandbox.app import create_app
from runbook.sandbox.scenario import Scenario
from tests.support.entry import run_entry
from tests.support.servers import Certificate, serve_https

TOKEN = "tls-test-token-93ab"
PLAN = "version: 1\nname: tls\nworkflows:\n  a: {workflow_id: 1}\n"


@pytest.fixture
def https_sandbox(certificate: Certificate) -> Iterator[tuple[str, object]]:
    app = create_app(Scenario(default={"queue": 0.0, "duration": 0.05}), token=TOKEN)
    with serve_https(app, certificate) as url:
        yield url, app


def apply(tmp_path: Path, url: str, monkeypatch: pytest.MonkeyPatch, **env: str):
    plan = tmp_path / "tls.yaml"
    plan.write_text(PLAN)
    for name, value in {"NEXADATA_TOKEN": TOKEN, "RUNBOOK_STATE_DIR": str(tmp_path), **env}.items():
        monkeypatch.setenv(name, value)
    return run_entry("apply", str(plan), "--api-url", url, timeout=60)


@pytest.mark.parametrize(
    "env",
    [
        {},
        # none of these turns verification off: not Python's, not curl's, not requests'
        {"PYTHONHTTPSVERIFY": "0", "CURL_CA_BUNDLE": "", "REQUESTS_CA_BUNDLE": ""},
    ],
    ids=["default", "verify-off-variables"],
)
def test_an_unverifiable_certificate_is_refused_at_once(
    tmp_path: Path, https_sandbox, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, app = https_sandbox
    result = apply(tmp_path, url, monkeypatch, **env)
    assert result.code == 3, result.out + result.err
    assert "the TLS connection to 127.0.0.1 failed" in result.out + result.err
    assert "certificate verify failed" in result.out + result.err
    assert "Traceback" not in result.out + result.err
    assert app.state.sandbox.stats()["requests_total"] == 0  # not one request got through


def test_a_private_ca_is_trusted_only_when_named(
    tmp_path: Path, https_sandbox, certificate, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, app = https_sandbox
    result = apply(tmp_path, url, monkeypatch, SSL_CERT_FILE=str(certificate.ca))
    assert result.code == 0, result.out + result.err
    assert app.state.sandbox.stats()["executions"] == {"1": 1}
