"""Hermetic tests: no real home or state dir, no token in the environment, loopback only."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.entry import Result

REAL_STATE = Path(os.path.expanduser("~")) / ".local" / "state" / "runbook"


@pytest.fixture(autouse=True)
def hermetic(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """A fresh HOME and state dir for every test; fail a test that touches the real one."""
    existed = REAL_STATE.exists()
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / ".local" / "state"))
    # nor what the machine says of its network: a test sets the proxy or CA it means
    network = (
        "HTTPS_PROXY",
        "HTTP_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
    )
    credentials = (
        "NEXADATA_TOKEN_COMMAND",
        "NEXADATA_TOKEN_URL",
        "NEXADATA_CLIENT_ID",
        "NEXADATA_CLIENT_SECRET",
        "NEXADATA_REFRESH_TOKEN",
    )
    for name in ("NEXADATA_TOKEN", "NEXADATA_API_URL", "RUNBOOK_STATE_DIR", *credentials, *network):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    yield
    assert REAL_STATE.exists() == existed, "a test touched the real runbook state dir"


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """Run the command line in-process through ``runbook.cli.main``."""
    from runbook.cli import main

    def run(*argv: str) -> Result:
        code = main(list(argv))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run
