"""One ``apply``: the options, checked once; the resources it needs, built and owned;
the run itself, under signal handlers.

``cli.py`` parses the command line into :class:`ApplyOptions` (every contradiction is a
UsageError there, before anything is read), then uses a :class:`Runner`: ``build()``
loads the plan, reads the token, takes the plan's lock and opens the journal, starts the
sandbox if asked; ``execute()`` runs the executor and hands back the run's record.
Everything built is closed by the runner's one ExitStack, however the run ends. The
runner prints nothing and exits nothing: what a person should hear goes to the
``notice`` callback or, during the run, to the sinks as events.
"""

from __future__ import annotations

import asyncio
import gc
import os
import shlex
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal

from runbook.api import NexadataClient, Token, check_base_url
from runbook.api.credentials import Credentials, token_file_warning
from runbook.auth import TokenSetup, choose_credentials
from runbook.errors import JournalError, LockedError, UsageError
from runbook.events import Notice, RunRecord, SignalReceived, Sink
from runbook.executor import Executor, left_running
from runbook.forecast import Eta
from runbook.graph import Selection
from runbook.journal import JournalSink, PlanLock, Store, state_dir
from runbook.netenv import ProxySettings, ca_bundle
from runbook.notify.metrics import MetricsFile, check_metrics_dir
from runbook.notify.notifier import Notifier, Webhook, targets_of
from runbook.notify.urls import SecretUrl
from runbook.plan import Plan, load_plan
from runbook.sandbox import SANDBOX_TOKEN

__all__ = ["ApiTarget", "ApplyOptions", "Runner", "api_target", "forbid_core_dumps"]

_PR_SET_DUMPABLE = 4  # linux/prctl.h

Tell = Callable[[str, str], None]
"""``notice(level, text)``: a ``note`` or ``warning`` for the person at the terminal."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ApplyOptions:
    """Everything ``apply`` was asked, checked as a whole when it is made: flags that
    contradict each other are a UsageError (exit 2) before anything is read or sent."""

    plan_path: str
    state_dir: str | None = None
    resume: bool = False
    retrigger_unknown: bool = False
    api_url: str | None = None
    token_file: str | None = None
    token_command: str | None = None
    sandbox: bool = False
    token_ttl: float | None = None
    new_run: bool = False
    scenario: str | None = None
    max_parallel: int | None = None
    report: str | None = None
    junit: str | None = None
    quiet: bool = False
    log_format: Literal["text", "json"] = "text"
    metrics_dir: str | None = None
    selects: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.scenario and not self.sandbox:
            raise UsageError("--scenario configures the built-in simulator: add --sandbox")
        if self.sandbox and self.api_url:
            raise UsageError("--sandbox runs against the built-in simulator: drop --api-url")
        if self.sandbox and self.token_file:
            raise UsageError("--sandbox needs no token: drop --token-file")
        if self.sandbox and self.token_command:
            raise UsageError("--sandbox needs no token: drop --token-command")
        if self.token_command is not None and not self.token_command.strip():
            raise UsageError("--token-command is empty: give the command that prints the token")
        if self.token_file and self.token_command:
            raise UsageError("--token-file and --token-command are two token sources: choose one")
        if self.token_ttl is not None and not self.sandbox:
            raise UsageError("--token-ttl configures the built-in simulator: add --sandbox")
        if self.token_ttl is not None and self.token_ttl <= 0:
            raise UsageError("--token-ttl must be more than 0 s")
        if self.new_run and self.resume:
            raise UsageError("--new-run starts a new run and --resume continues one: choose one")
        if self.retrigger_unknown and not self.resume:
            raise UsageError("--retrigger-unknown goes with --resume")
        if self.resume and self.sandbox:
            raise UsageError(
                "--resume cannot use --sandbox: the built-in simulator forgets its executions "
                "when apply ends; serve one with 'runbook sandbox' and point --api-url at it"
            )
        if self.max_parallel is not None and self.max_parallel < 1:
            raise UsageError("--max-parallel must be at least 1")

    @property
    def resume_command(self) -> str:
        """The command that continues this run (a token command by its first word only:
        its arguments may hold secrets)."""
        extra = f" --state-dir {shlex.quote(self.state_dir)}" if self.state_dir else ""
        if self.api_url:
            extra += f" --api-url {shlex.quote(self.api_url)}"
        if self.token_file:
            extra += f" --token-file {shlex.quote(self.token_file)}"
        if self.token_command:
            first = shlex.split(self.token_command)[0] if self.token_command.strip() else ""
            extra += f" --token-command {shlex.quote(first + ' ...')}"
        for spec in self.selects:
            extra += f" --select {shlex.quote(spec)}"
        for spec in self.excludes:
            extra += f" --exclude {shlex.quote(spec)}"
        return f"runbook apply {shlex.quote(self.plan_path)} --resume{extra}"

    @property
    def recorded(self) -> dict[str, object]:
        """What the journal keeps of the options (never the token or its file)."""
        return {
            "api_url": self.api_url,
            "sandbox": self.sandbox,
            "scenario": self.scenario,
            "max_parallel": self.max_parallel,
            "select": list(self.selects),
            "exclude": list(self.excludes),
        }


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
    """Where requests go, through which proxy (None: directly), and with which token
    source."""

    base_url: str
    auth: TokenSetup
    proxy: str | None = None


def api_target(
    plan: Plan,
    *,
    api_url: str | None,
    token_file: str | None,
    token_command: str | None = None,
    state_dir: Path,
    environ: Mapping[str, str] | None = None,
) -> ApiTarget:
    """The URL (flag > NEXADATA_API_URL > plan), the proxy the environment names for it
    (netenv) and the token source (runbook.auth).

    All are checked before anything is sent: a ConfigError (exit 3) otherwise.
    """
    env = os.environ if environ is None else environ
    url = check_base_url(api_url or env.get("NEXADATA_API_URL") or plan.api.base_url)
    proxy = ProxySettings.from_env(env).for_url(url)
    if url.startswith("https:"):
        ca_bundle(env)
    auth = choose_credentials(
        plan,
        token_file=token_file,
        token_command=token_command,
        state_dir=state_dir,
        environ=env,
    )
    return ApiTarget(url, auth, proxy)


@contextmanager
def _sandbox_target(scenario_path: str | None, token_ttl: float | None) -> Iterator[ApiTarget]:
    """The built-in simulator on a free loopback port, for the length of the block;
    with ``token_ttl``, reached through its OAuth client, whose tokens expire."""
    from runbook.sandbox.app import create_app
    from runbook.sandbox.scenario import Scenario, load_scenario
    from runbook.sandbox.server import serve_in_thread

    scenario = load_scenario(scenario_path) if scenario_path else Scenario()
    if token_ttl is None:
        with serve_in_thread(create_app(scenario, token=SANDBOX_TOKEN)) as url:
            token = Token(SANDBOX_TOKEN)
            yield ApiTarget(url, TokenSetup(Credentials.static(token, "the sandbox's token")))
        return
    from runbook.sandbox import SandboxOAuth

    oauth = SandboxOAuth(token_ttl=token_ttl)
    with serve_in_thread(create_app(scenario, token=SANDBOX_TOKEN, oauth=oauth)) as url:
        from runbook.api.oauth import OAuthClient, OAuthSource, token_transport
        from runbook.api.secrets import Redactor, Secret

        client = OAuthClient(
            token_url=url.removesuffix("/api/v1") + "/oauth/token",
            client_id=oauth.client_id,
            client_secret=Secret(oauth.client_secret),
        )
        redactor = Redactor()
        source = OAuthSource(client, transport=token_transport(), redactor=redactor)
        yield ApiTarget(url, TokenSetup(Credentials(source, redactor)))


@dataclass(slots=True)
class _Built:
    plan: Plan
    selection: Selection
    stages: list[list[str]]
    target: ApiTarget
    store: Store
    lock: PlanLock
    prior: RunRecord | None = None
    webhooks: list[Webhook] = field(default_factory=list)
    ping: SecretUrl | None = None
    previous_succeeded: bool | None = None
    """How the plan's previous invocation ended (None: this is its first run)."""


class Runner:
    """One ``apply``, used as ``with Runner(options) as runner``: ``build()``, then
    ``execute()``. Leaving the block closes the journal, releases the lock and stops
    the sandbox."""

    def __init__(self, options: ApplyOptions, *, notice: Tell | None = None) -> None:
        self.options = options
        self._notice: Tell = notice or (lambda level, text: None)
        self._stack = ExitStack()
        self._built: _Built | None = None
        self._abandon: tuple[int, str] | None = None

    def __enter__(self) -> Runner:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.close()

    def build(self) -> None:
        """Load and select the plan, read the token, take the lock, open the journal
        and, with ``--resume``, find the run to go on with; start the sandbox."""
        o = self.options
        forbid_core_dumps()  # before the token is read
        if o.metrics_dir:
            check_metrics_dir(o.metrics_dir)
        plan = load_plan(o.plan_path)
        selection = plan.dag.select(o.selects, o.excludes)
        directory = state_dir(o.state_dir)
        # the token source is checked before the plan's lock: a bad token file costs no lock
        target = None
        if not o.sandbox:
            target = api_target(
                plan,
                api_url=o.api_url,
                token_file=o.token_file,
                token_command=o.token_command,
                state_dir=directory,
            )
            if target.auth.note:
                self._notice("note", target.auth.note)
        webhooks, ping = targets_of(plan)
        warning = token_file_warning(o.token_file) if o.token_file else None
        if warning:
            self._notice("warning", warning)
        store = Store(directory)
        self._stack.callback(store.close)
        lock = PlanLock(directory, plan.name)
        lock.acquire()
        self._stack.callback(lock.release)
        prior = None
        if o.resume:
            prior, selection = self._resumable(store, plan, selection)
            previous: bool | None = prior.state == "succeeded"
        else:
            latest = store.latest(plan.name)
            previous = None if latest is None else latest.state == "succeeded"
            # a sandbox's executions ended with it; a sandbox run never touches another's
            if (
                latest is not None
                and latest.state != "abandoned"
                and not o.sandbox
                and not store.went_to_sandbox(latest.id)
            ):
                self._over_a_run(store.load_run(latest), plan)
        if target is None:
            target = self._stack.enter_context(_sandbox_target(o.scenario, o.token_ttl))
        stages = plan.dag.stages(selection.steps)
        self._built = _Built(
            plan, selection, stages, target, store, lock, prior, webhooks, ping, previous
        )

    def _over_a_run(self, latest: RunRecord, plan: Plan) -> None:
        """A new run while the latest one left executions that may still be running is
        the duplicate a user makes by hand ("check the token", then the same command
        again): refused (exit 4) unless ``--new-run``, which abandons that run."""
        unseen, timed_out = left_running(latest)
        ident = f"run {latest.run_id}"
        if unseen:
            listed = "; ".join(
                f"{step.name} (workflow {step.workflow_id}, "
                + (f"execution {execution})" if execution else "its trigger got no answer)")
                for step, execution in unseen
            )
            if not self.options.new_run:
                raise LockedError(
                    f"{ident} of plan {plan.name!r} ({latest.state}) left executions that may "
                    f"still be running on Nexadata: {listed}. Follow them and run what is "
                    f"left with: {self.options.resume_command}; or start a new run anyway "
                    f"with --new-run ({ident} is then abandoned, its executions left to "
                    "finish on their own)"
                )
            # abandoned when the new run is written: a new run that fails to start
            # (no token) leaves the old one resumable
            self._abandon = (
                latest.run_id or 0,
                f"{ident} is abandoned (--new-run): its executions are left to finish on "
                f"their own: {listed}",
            )
        for step, execution in timed_out:
            self._notice(
                "note",
                f"{ident}'s execution {execution} ({step.name}, workflow {step.workflow_id}) "
                "timed out and may still be running on Nexadata",
            )

    def _resumable(
        self, store: Store, plan: Plan, selection: Selection
    ) -> tuple[RunRecord, Selection]:
        """The run ``--resume`` continues, and the selection to run: without selection
        flags, the earlier run's steps."""
        row = store.resumable(plan.name)
        if row is None:
            raise UsageError(
                f"nothing to resume: plan {plan.name!r} has no run that did not succeed in "
                "this state dir"
            )
        prior = store.load_run(row)
        if row.plan_sha256 != plan.sha256:
            self._notice(
                "note",
                f"{plan.path} changed since run {prior.run_id}; its steps are matched by "
                "name and workflow id",
            )
        if not (self.options.selects or self.options.excludes):
            steps = frozenset(name for name in prior.steps if name in plan.steps)
            done = {up for name in steps for up in plan.steps[name].depends_on} - steps
            selection = Selection(steps=steps, assumed_done=frozenset(done))
        return prior, selection

    def execute(
        self, sinks: Sequence[Sink], *, on_second_signal: Callable[[], None] = lambda: None
    ) -> RunRecord:
        """Run the selected steps to the end, or until a signal; return the run's record.

        The journal is the first sink, so every event is durable before any renderer
        sees it. The first SIGINT or SIGTERM stops the run (no new trigger, polls end,
        in-flight executions are left to run and recorded as such); each signal reaches
        the sinks as a :class:`~runbook.events.SignalReceived` event, and after the
        second one has reached them, ``on_second_signal`` is called (the CLI ends the
        process there).
        """
        built = self._built
        if built is None:  # pragma: no cover - a programming error
            raise RuntimeError("Runner.execute() before build()")
        recorded: list[int] = []  # the run's id, once the journal has it
        # A run makes few reference cycles: the collector looks for them every 10,000
        # allocations, not 700. On 2,000 steps it took 0.16 s of CPU in 320 collections,
        # now 0.03 s in 14. (Freezing what was loaded saved little more, and collecting
        # first, so that nothing dead is frozen, cost 30 ms of start-up.)
        thresholds = gc.get_threshold()
        gc.set_threshold(10_000, *thresholds[1:])
        try:
            return asyncio.run(self._main(built, sinks, recorded, on_second_signal))
        except JournalError as exc:
            if not recorded:
                raise
            run_id = recorded[0]
            stopped = (
                f"{exc}\nrunbook: run {run_id} stopped there: nothing was triggered after "
                "the failed write"
            )
            if self.options.sandbox:  # the simulator ended with the run: nothing to resume
                raise JournalError(stopped) from None
            raise JournalError(
                f"{stopped}; executions triggered before it may still be running. Once the "
                f"journal can be written, resume with: {self.options.resume_command}"
            ) from None
        finally:
            gc.set_threshold(*thresholds)

    async def _main(
        self,
        built: _Built,
        sinks: Sequence[Sink],
        recorded: list[int],
        on_second_signal: Callable[[], None],
    ) -> RunRecord:
        o, plan = self.options, built.plan
        parallel = o.max_parallel or plan.max_parallel
        target = built.target
        credentials = target.auth.credentials
        try:
            # the first token before the run is written: a token source that fails
            # costs no run in the journal, and nothing was sent to the API
            await credentials.token()
            async with NexadataClient(
                target.base_url,
                credentials,
                max_in_flight=min(64, max(16, parallel)),
                proxy=target.proxy,
            ) as api:
                return await self._run(built, api, sinks, recorded, on_second_signal)
        finally:
            await credentials.aclose()

    async def _run(
        self,
        built: _Built,
        api: NexadataClient,
        sinks: Sequence[Sink],
        recorded: list[int],
        on_second_signal: Callable[[], None],
    ) -> RunRecord:
        o, plan = self.options, built.plan
        parallel = o.max_parallel or plan.max_parallel
        credentials = api.credentials
        prior = built.prior
        earlier = prior.token_refreshes if prior else 0  # a resumed run's count goes on
        executor = Executor(
            plan,
            api,
            steps=built.selection.steps,
            stages=built.stages,
            assumed_done=built.selection.assumed_done,
            max_parallel=parallel,
            sinks=sinks,
            run_id=prior.run_id if prior else None,
            prior=prior,
            retrigger_unknown=o.retrigger_unknown,
            deadline_from=prior.started_at if prior else None,
            token_refreshes=lambda: earlier + credentials.refreshes,
        )
        executor.run.auth = credentials.kind
        journal = self._record(built, executor)
        recorded.append(journal.run_id)
        executor.sinks.insert(0, journal)
        executor.sinks.extend(self._operations(built, executor, journal.run_id))
        loop = asyncio.get_running_loop()

        def on_signal(name: str) -> None:
            first = executor.halted is None
            if first:
                executor.interrupt(f"interrupted by {name}")
            executor.tell(
                SignalReceived(
                    name=name,
                    first=first,
                    triggers_under_way=executor.triggers_under_way,
                    grace=executor.interrupt_grace,
                    at=time.time(),
                )
            )
            if not first:
                on_second_signal()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig.name)
        try:
            return await executor.execute()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
            journal.close()

    def _operations(self, built: _Built, executor: Executor, run_id: int) -> list[Sink]:
        """The sinks that tell the monitoring: the ETA (whose at_risk the notifier
        sends), the metrics file, then the webhooks and pings (last: the end of the run
        waits for them, up to 30 s)."""
        sinks: list[Sink] = []
        o, store, plan = self.options, built.store, built.plan
        first_started = built.prior.started_at if built.prior else None

        def warn(text: str) -> None:
            executor.tell(Notice(text, time.time()))

        history = store.workflow_history(step.workflow_id for step in plan.steps.values())
        sinks.append(
            Eta(
                plan,
                history,
                steps=built.selection.steps,
                max_parallel=executor.run.max_parallel,
                tell=executor.tell,
                deadline_from=first_started,
            )
        )
        if o.metrics_dir:
            last_row = store.last_finished(plan.name)
            sinks.append(
                MetricsFile(
                    o.metrics_dir,
                    plan.name,
                    last=store.load_run(last_row) if last_row else None,
                    last_success_end=store.last_success_end(plan.name),
                    first_started=first_started,
                    warn=warn,
                )
            )
        if built.webhooks or built.ping:
            sinks.append(
                Notifier(
                    built.webhooks,
                    built.ping,
                    tell=executor.tell,
                    recovered=built.previous_succeeded is False,
                    late_told=built.prior is not None and store.late_notified(run_id),
                )
            )
        return sinks

    def _record(self, built: _Built, executor: Executor) -> JournalSink:
        """Write the run (or take the resumed one over) before anything is sent."""
        store, run = built.store, executor.run
        if built.prior is not None and run.run_id is not None:
            store.reopen_run(run.run_id, run)
            new = False
        else:
            new = True
            if self._abandon is not None:
                store.abandon(self._abandon[0])
                self._notice("note", self._abandon[1])
            run.run_id = store.create_run(
                run,
                plan_path=built.plan.path,
                plan_sha256=built.plan.sha256,
                options=self.options.recorded,
                started_at=time.time(),
            )
        built.lock.note(f"run {run.run_id}")
        return JournalSink(store, run.run_id, new=new)
