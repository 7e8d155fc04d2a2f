"""The sandbox under an independent API tester: Schemathesis, every check, against a
real ``runbook sandbox`` process and the OpenAPI document the repository ships."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from runbook.sandbox import SANDBOX_TOKEN
from tests.cli.test_sandbox_command import start
from tests.helpers import ROOT

DOCUMENT = ROOT / "runbook" / "sandbox" / "openapi.yaml"


def schemathesis() -> list[str]:
    script = Path(sys.executable).parent / "schemathesis"
    return [str(script)] if script.exists() else [shutil.which("schemathesis") or "st"]


def test_the_document_names_the_routes_the_sandbox_serves() -> None:
    from runbook.sandbox.app import create_app

    document = yaml.safe_load(DOCUMENT.read_text())
    served = {
        route.path.replace(":int}", "}").removeprefix("/api/v1")
        for route in create_app().routes
        if route.path.startswith("/api/v1") and "pipelines" not in route.path
    }
    assert {path.replace("{id}", "{workflow_id}") for path in document["paths"]} == served


def test_schemathesis_finds_nothing_with_every_check() -> None:
    process, banner = start("--port", "0")
    try:
        url = banner[1].split()[-1]
        done = subprocess.run(
            [
                *schemathesis(),
                "run",
                str(DOCUMENT),
                "--url",
                url,
                "--header",
                f"Authorization: Bearer {SANDBOX_TOKEN}",
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
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "No issues found" in done.stdout
    assert " passed" in done.stdout and " failed" not in done.stdout
