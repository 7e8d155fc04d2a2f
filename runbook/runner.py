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
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from runbook.api import NexadataClient, Token, check_base_url
from runbook.durations import format_duration
from runbook.errors import UsageError
from runbook.events import RunRecord, Sink
from runbook.executor import Executor
from runbook.graph import Selection
from runbook.journal import Journal, PlanLock, state_dir
from runbook.plan import Plan
from runbook.text import plural

__all__ = [
    "ApiTarget",
    "forbid_core_dumps",
    "prepare_durable",
    "Durable",
    "api_target",
    "open_journal",
    "resumable",
    "run_plan",
    "sandbox_target",
]

SANDBOX_TOKEN = "sandbox"
_PR_SET_DUMPABLE = 4  # linux/prctl.h


def forbid_core_dumps() -> None:
    """The token lives in this process's memory, so no core file may be written of it
    (a ``kill -QUIT`` under ``ulimit -c unlimited`` wrote eight copies): the core size
    limit drops to 0 and, on Linux, the process becomes non-dumpable (which also keeps
    other processes of the same user from attaching a debugger to it)."""
    import resource

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)


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


@dataclass(frozen=True, slots=True)
class Durable:
    """The journal side of a run: where it is recorded, and what it resumes."""

    journal: Journal
    lock: PlanLock
    prior: RunRecord | None = None
    retrigger_unknown: bool = False
    options: Mapping[str, object] | None = None


def run_plan(
    plan: Plan,
    target: ApiTarget,
    selection: Selection,
    stages: Sequence[Sequence[str]],
    *,
    max_parallel: int | None,
    sinks: Sequence[Sink],
    durable: Durable | None = None,
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
            prior = durable.prior if durable else None
            executor = Executor(
                plan,
                api,
                steps=selection.steps,
                stages=stages,
                assumed_done=selection.assumed_done,
                max_parallel=parallel,
                sinks=sinks,
                run_id=prior.run_id if prior else None,
                prior=prior,
                retrigger_unknown=bool(durable and durable.retrigger_unknown),
            )
            if durable is not None:
                _record(durable, plan, executor)
            loop = asyncio.get_running_loop()

            def on_signal(name: str) -> None:
                if executor.halted is not None:
                    sys.stderr.write(f"runbook: second {name}: exiting at once\n")
                    sys.stderr.flush()
                    os._exit(130)
                executor.interrupt(f"interrupted by {name}")
                waiting = executor.triggers_under_way
                wait = (
                    f"; waiting for {plural(waiting, 'trigger')} under way to be answered, so "
                    "that no execution id is lost (at most "
                    f"{format_duration(executor.interrupt_grace)})"
                    if waiting
                    else ""
                )
                sys.stderr.write(
                    f"runbook: {name}: stopping{wait} (a second {name} exits at once)\n"
                )
                sys.stderr.flush()

            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, on_signal, sig.name)
            try:
                return await executor.execute()
            finally:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)

    return asyncio.run(main())


def _record(durable: Durable, plan: Plan, executor: Executor) -> None:
    """Write the run (or take the resumed one over) before anything is sent; the journal
    becomes the first sink, so every event is durable before any renderer sees it."""
    journal, run = durable.journal, executor.run
    if durable.prior is not None and run.run_id is not None:
        journal.reopen_run(run.run_id, run)
    else:
        run.run_id = journal.create_run(
            run,
            plan_path=plan.path,
            plan_sha256=plan.sha256,
            options=durable.options or {},
            started_at=time.time(),
        )
    journal.run_id = run.run_id
    durable.lock.note(f"run {run.run_id}")
    executor.sinks.insert(0, journal)


def open_journal(directory: str | None, plan: Plan) -> tuple[Journal, PlanLock]:
    """The state dir's journal, and this plan's lock held (LockedError, exit 4, if not)."""
    path = state_dir(directory)
    journal = Journal(path)
    lock = PlanLock(path, plan.name)
    try:
        lock.acquire()
    except BaseException:
        journal.close()
        raise
    return journal, lock


def resumable(journal: Journal, plan: Plan) -> tuple[RunRecord, bool]:
    """The run ``--resume`` continues, and whether the plan file changed since."""
    row = journal.resumable(plan.name)
    if row is None:
        raise UsageError(
            f"nothing to resume: plan {plan.name!r} has no run that did not succeed in this "
            "state dir"
        )
    return journal.load_run(row), row["plan_sha256"] != plan.sha256


def prepare_durable(
    directory: str | None,
    plan: Plan,
    selection: Selection,
    *,
    resume: bool,
    keep_selection: bool,
    retrigger_unknown: bool,
    options: Mapping[str, object],
) -> tuple[Durable, Selection, str | None]:
    """Open the journal and take the plan's lock; with ``resume``, find the run to go on
    with. Returns the durable side, the selection to run (a resume without selection
    flags takes the earlier run's steps) and a note for the user, if any."""
    journal, lock = open_journal(directory, plan)
    prior, note = None, None
    if resume:
        try:
            prior, changed = resumable(journal, plan)
        except BaseException:
            lock.release()
            journal.close()
            raise
        if changed:
            note = (
                f"{plan.path} changed since run {prior.run_id}; its steps are matched by "
                "name and workflow id"
            )
        if not keep_selection:
            steps = frozenset(name for name in prior.steps if name in plan.steps)
            done = {up for name in steps for up in plan.steps[name].depends_on} - steps
            selection = Selection(steps=steps, assumed_done=frozenset(done))
    return Durable(journal, lock, prior, retrigger_unknown, options), selection, note
