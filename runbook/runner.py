"""One ``apply``: resolve where the API is and the token, start the sandbox if asked,
run the executor under signal handlers, and hand back the run's record.

The CLI parses and renders; this module owns the wiring between the plan, the API
client, the sandbox and the executor.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from runbook.api import NexadataClient, Token, check_base_url
from runbook.errors import UsageError
from runbook.events import RunRecord, Sink
from runbook.executor import Executor
from runbook.graph import Selection
from runbook.plan import Plan

__all__ = ["ApiTarget", "api_target", "run_plan", "sandbox_target"]

SANDBOX_TOKEN = "sandbox"


@dataclass(frozen=True, slots=True)
class ApiTarget:
    """Where requests go, and with which token."""

    base_url: str
    token: Token


def api_target(
    plan: Plan,
    *,
    api_url: str | None,
    token_file: str | None,
    environ: Mapping[str, str] | None = None,
) -> ApiTarget:
    """The URL (flag > NEXADATA_API_URL > plan) and the token (file > plan's env var).

    Both are checked before anything is sent: a ConfigError (exit 3) otherwise.
    """
    env = os.environ if environ is None else environ
    url = check_base_url(api_url or env.get("NEXADATA_API_URL") or plan.api.base_url)
    token = Token.from_file(token_file) if token_file else Token.from_env(plan.api.token_env, env)
    return ApiTarget(url, token)


@contextmanager
def sandbox_target(scenario_path: str | None) -> Iterator[ApiTarget]:
    """The built-in simulator on a free loopback port, for the length of the block."""
    from runbook.sandbox.app import create_app
    from runbook.sandbox.scenario import Scenario, load_scenario
    from runbook.sandbox.server import serve_in_thread

    scenario = load_scenario(scenario_path) if scenario_path else Scenario()
    with serve_in_thread(create_app(scenario, token=SANDBOX_TOKEN)) as url:
        yield ApiTarget(url, Token(SANDBOX_TOKEN))


def check_options(
    *, sandbox: bool, scenario: str | None, api_url: str | None, token_file: str | None
) -> None:
    """Flags that contradict each other are a usage error (exit 2), before anything runs."""
    if scenario and not sandbox:
        raise UsageError("--scenario configures the built-in simulator: add --sandbox")
    if sandbox and api_url:
        raise UsageError("--sandbox runs against the built-in simulator: drop --api-url")
    if sandbox and token_file:
        raise UsageError("--sandbox needs no token: drop --token-file")


def run_plan(
    plan: Plan,
    target: ApiTarget,
    selection: Selection,
    stages: Sequence[Sequence[str]],
    *,
    max_parallel: int | None,
    sinks: Sequence[Sink],
) -> RunRecord:
    """Run the selected steps to the end, or until a signal; return the run's record.

    The first SIGINT or SIGTERM stops the run (no new trigger, polls end, in-flight
    executions are left to run and recorded as such); a second one exits at once.
    """

    async def main() -> RunRecord:
        parallel = max_parallel or plan.max_parallel
        async with NexadataClient(
            target.base_url, target.token, max_in_flight=min(64, max(16, parallel))
        ) as api:
            executor = Executor(
                plan,
                api,
                steps=selection.steps,
                stages=stages,
                assumed_done=selection.assumed_done,
                max_parallel=parallel,
                sinks=sinks,
            )
            loop = asyncio.get_running_loop()

            def on_signal(name: str) -> None:
                if executor.halted is not None:
                    sys.stderr.write(f"runbook: second {name}: exiting at once\n")
                    sys.stderr.flush()
                    os._exit(130)
                executor.interrupt(f"interrupted by {name}")

            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, on_signal, sig.name)
            try:
                return await executor.execute()
            finally:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)

    return asyncio.run(main())
