"""Real servers on loopback: the sandbox under uvicorn, and raw TCP misbehavers."""

from __future__ import annotations

import pytest

from runbook.sandbox import SANDBOX_TOKEN
from runbook.sandbox.app import create_app
from runbook.sandbox.scenario import Scenario
from runbook.sandbox.server import serve_in_thread
from tests.support.clocks import Clock
from tests.support.servers import Certificate, make_certificate


@pytest.fixture
def clock() -> Clock:
    return Clock(now=100.0)


@pytest.fixture
def sandbox_server(clock: Clock):
    """``start(scenario) -> (base_url, app)``; every server stops at the end of the test."""
    stack = []

    def start(scenario: Scenario | None = None, token: str = SANDBOX_TOKEN):
        app = create_app(scenario, token=token, clock=clock)
        context = serve_in_thread(app)
        url = context.__enter__()
        stack.append(context)
        return url, app

    yield start
    for context in reversed(stack):
        context.__exit__(None, None, None)


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A private CA and a server certificate for 127.0.0.1 and api.nexadata.test."""
    return make_certificate(tmp_path_factory.mktemp("tls"))
