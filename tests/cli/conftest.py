"""Fixtures of the tests that run ``runbook apply`` against a sandbox in this process:
it outlives every apply it serves, so its counters say how many executions each
workflow really got."""

from __future__ import annotations

from pathlib import Path

import pytest

from runbook.sandbox.app import create_app
from runbook.sandbox.scenario import Scenario
from runbook.sandbox.server import serve_in_thread
from tests.support.night import PLAN, TOKEN


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``start(scenario) -> app``: a sandbox whose URL and token apply finds in the env."""
    contexts = []

    def start(scenario: Scenario):
        app = create_app(scenario, token=TOKEN)
        context = serve_in_thread(app)
        monkeypatch.setenv("NEXADATA_API_URL", context.__enter__())
        monkeypatch.setenv("NEXADATA_TOKEN", TOKEN)
        monkeypatch.setenv("RUNBOOK_STATE_DIR", str(tmp_path / "state"))
        contexts.append(context)
        return app

    yield start
    for context in contexts:
        context.__exit__(None, None, None)


@pytest.fixture
def plan(tmp_path: Path) -> Path:
    """The plan 'night' (modules with a plan of their own define their own fixture)."""
    path = tmp_path / "night.yaml"
    path.write_text(PLAN)
    return path
