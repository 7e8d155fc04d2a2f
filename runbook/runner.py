"""One ``apply``, in two steps: :func:`prepare` builds and owns what the run needs,
:func:`run` runs it.

``prepare(options)`` is a context manager: it loads and selects the plan, checks the
token source, takes the plan's lock and opens the journal, finds the run ``--resume``
continues (or refuses a new run over one still going), and starts the sandbox if
asked; it yields a frozen :class:`Prepared`, and leaving the block closes the journal,
releases the lock and stops the sandbox, however the run ended. ``run(prepared,
sinks)`` writes the run to the journal, assembles the bus (the journal first), runs
the executor under the signal handlers and hands back the run's record. Nothing here
prints or exits: what a person should hear goes to the ``notice`` callback or, during
the run, to the sinks as events.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from runbook.api import NexadataClient
from runbook.api.sources import token_file_warning
from runbook.errors import JournalError, LockedError, UsageError
from runbook.eta import Eta
from runbook.events import Died, Notice, RunRecord, Sink
from runbook.executor import Executor
from runbook.graph import Selection
from runbook.journal import JournalSink, PlanLock, Store, state_dir
from runbook.options import ApplyOptions
from runbook.plan import Plan, load_plan
from runbook.process import collector_paused, collector_relaxed
from runbook.run.bus import Bus
from runbook.run.planned import planned
from runbook.run.resume import left_running
from runbook.run.signals import interrupts
from runbook.target import ApiTarget, Went, resume_url, sandbox_target, targets
from runbook.text import printable

if TYPE_CHECKING:
    from runbook.notify.notifier import Webhook
    from runbook.notify.urls import SecretUrl

__all__ = ["Prepared", "prepare", "run"]

Tell = Callable[[str, str], None]
"""``notice(level, text)``: a ``note`` or ``warning`` for the person at the terminal."""


@dataclass(frozen=True, slots=True)
class Abandoned:
    """The run ``--new-run`` leaves behind: marked abandoned once the new run is
    written (a new run that fails to start leaves it resumable)."""

    run_id: int
    note: str


@dataclass(frozen=True, slots=True)
class Prepared:
    """Everything one ``apply`` runs with, checked and open."""

    options: ApplyOptions
    plan: Plan
    selection: Selection
    target: ApiTarget
    store: Store
    lock: PlanLock
    notice: Tell
    prior: RunRecord | None = None
    """The run ``--resume`` continues."""
    abandon: Abandoned | None = None
    webhooks: tuple[Webhook, ...] = ()
    ping: SecretUrl | None = None
    previous_succeeded: bool | None = None
    """How the plan's previous invocation ended (None: this is its first run)."""


@contextmanager
def prepare(options: ApplyOptions, *, notice: Tell | None = None) -> Iterator[Prepared]:
    """Load and select the plan, check the token source, take the lock, open the
    journal and, with ``--resume``, find the run to go on with; start the sandbox."""
    o = options
    tell: Tell = notice or (lambda level, text: None)
    with ExitStack() as stack:
        if o.metrics_dir:
            from runbook.notify.metrics import check_metrics_dir

            check_metrics_dir(o.metrics_dir)
        with collector_paused():
            plan = load_plan(o.plan_path)
        selection = plan.dag.select(o.selects, o.excludes)
        directory = state_dir(o.state_dir)
        store = went = None
        api_url = o.api_url
        if o.resume:  # a resume goes where its run went: read before the URL is chosen
            store = stack.enter_context(Store(directory))
            if (row := store.resumable(plan.name)) is not None:
                went = Went(row.id, row.api_url, store.went_to_sandbox(row.id))
                api_url, note = resume_url(went, plan, api_url=o.api_url)
                if note:
                    tell("note", note)
        # the token source is checked before the plan's lock: a bad token file costs no lock
        target, webhooks, ping = targets(
            plan,
            sandbox=o.sandbox,
            api_url=api_url,
            token_file=o.token_file,
            token_command=o.token_command,
            state_dir=directory,
        )
        if target is not None and target.auth.note:
            tell("note", target.auth.note)
        warning = token_file_warning(o.token_file) if o.token_file else None
        if warning:
            tell("warning", warning)
        if store is None:
            store = stack.enter_context(Store(directory))
        lock = PlanLock(directory, plan.name)
        lock.acquire()
        stack.callback(lock.release)
        prior = abandon = None
        if o.resume:
            prior, selection = _resumable(o, store, plan, selection, tell)
            if went is not None and prior.run_id != went.run_id:
                raise LockedError(
                    f"the runs of plan {plan.name!r} changed while this apply started "
                    f"(run {prior.run_id}, not run {went.run_id}, is now the one to resume): "
                    "run it again"
                )
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
                abandon = _over_a_run(o, store.load_run(latest), plan, tell)
        if target is None:
            target = stack.enter_context(sandbox_target(o.scenario, o.token_ttl))
        yield Prepared(
            o,
            plan,
            selection,
            target,
            store,
            lock,
            tell,
            prior,
            abandon,
            tuple(webhooks),
            ping,
            previous,
        )


def _over_a_run(
    options: ApplyOptions, latest: RunRecord, plan: Plan, notice: Tell
) -> Abandoned | None:
    """A new run while the latest one left executions that may still be running is
    the duplicate a user makes by hand ("check the token", then the same command
    again): refused (exit 4) unless ``--new-run``, which abandons that run."""
    unseen, timed_out = left_running(latest)
    abandon = None
    ident = f"run {latest.run_id}"
    if unseen:
        listed = "; ".join(
            f"{step.name} (workflow {step.workflow_id}, "
            + (f"execution {execution})" if execution else "its trigger got no answer)")
            for step, execution in unseen
        )
        if not options.new_run:
            raise LockedError(
                f"{ident} of plan {plan.name!r} ({latest.state}) left executions that may "
                f"still be running on Nexadata: {listed}. Follow them and run what is "
                f"left with: {options.resume_command}; or start a new run anyway "
                f"with --new-run ({ident} is then abandoned, its executions left to "
                "finish on their own)"
            )
        # abandoned when the new run is written: a new run that fails to start
        # (no token) leaves the old one resumable
        abandon = Abandoned(
            latest.run_id or 0,
            f"{ident} is abandoned (--new-run): its executions are left to finish on "
            f"their own: {listed}",
        )
    for step, execution in timed_out:
        notice(
            "note",
            f"{ident}'s execution {execution} ({step.name}, workflow {step.workflow_id}) "
            "timed out and may still be running on Nexadata",
        )
    return abandon


def _resumable(
    options: ApplyOptions, store: Store, plan: Plan, selection: Selection, notice: Tell
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
    if row.state == "running":  # and this process holds the lock: its process is gone
        prior.died = Died(row.pid, row.host)
        notice(
            "note",
            f"run {row.id} was left running by pid {row.pid} on {printable(row.host)}, whose "
            "process died: this resume follows what it left",
        )
    if row.plan_sha256 != plan.sha256:
        notice(
            "note",
            f"{plan.path} changed since run {prior.run_id}; its steps are matched by "
            "name and workflow id",
        )
    if not (options.selects or options.excludes):
        steps = frozenset(name for name in prior.steps if name in plan.steps)
        done = {up for name in steps for up in plan.steps[name].depends_on} - steps
        selection = Selection(steps=steps, assumed_done=frozenset(done))
    return prior, selection


def run(
    prepared: Prepared,
    sinks: Sequence[Sink],
    *,
    on_second_signal: Callable[[], None] = lambda: None,
) -> RunRecord:
    """Run the selected steps to the end, or until a signal; return the run's record.

    The journal is the first sink, so every event is durable before any renderer
    sees it. The first SIGINT or SIGTERM stops the run (no new trigger, polls end,
    in-flight executions are left to run and recorded as such); each signal reaches
    the sinks as a :class:`~runbook.events.SignalReceived` event, and after the
    second one has reached them, ``on_second_signal`` is called (the CLI ends the
    process there).
    """
    with collector_relaxed():
        return asyncio.run(_main(prepared, sinks, on_second_signal))


async def _main(
    prepared: Prepared, sinks: Sequence[Sink], on_second_signal: Callable[[], None]
) -> RunRecord:
    o, target = prepared.options, prepared.target
    credentials = target.auth.credentials
    try:
        # the first token before the run is written: a token source that fails
        # costs no run in the journal, and nothing was sent to the API
        await credentials.token()
        async with NexadataClient(
            target.base_url,
            credentials,
            max_in_flight=min(64, max(16, o.max_parallel or prepared.plan.max_parallel)),
            proxy=target.proxy,
        ) as api:
            return await _run(prepared, api, sinks, on_second_signal)
    finally:
        await credentials.aclose()


async def _run(
    prepared: Prepared,
    api: NexadataClient,
    sinks: Sequence[Sink],
    on_second_signal: Callable[[], None],
) -> RunRecord:
    o, prior = prepared.options, prepared.prior
    credentials = api.credentials
    earlier = prior.token_refreshes if prior else 0  # a resumed run's count goes on
    plan_run = planned(
        prepared.plan,
        steps=prepared.selection.steps,
        assumed_done=prepared.selection.assumed_done,
        max_parallel=o.max_parallel,
        prior=prior,
        retrigger_unknown=o.retrigger_unknown,
    )
    run = plan_run.run
    run.auth = credentials.kind
    run.api_url = prepared.target.base_url
    run.died = prior.died if prior is not None else None
    journal = _record(prepared, run)
    bus = Bus(journal, sinks)
    executor = Executor(plan_run, api, bus, token_refreshes=lambda: earlier + credentials.refreshes)
    bus.add(*_operations(prepared, bus, run))
    try:
        try:
            with interrupts(executor, on_second_signal):
                return await executor.execute()
        finally:
            journal.close()
    except JournalError as exc:
        raise _stopped(exc, run, o) from None


def _stopped(exc: JournalError, run: RunRecord, options: ApplyOptions) -> JournalError:
    """The journal failed once the run was written: nothing was triggered after the
    failed write; say how to go on."""
    stopped = (
        f"{exc}\nrunbook: run {run.run_id} stopped there: nothing was triggered after "
        "the failed write"
    )
    if options.sandbox:  # the simulator ended with the run: nothing to resume
        return JournalError(stopped)
    return JournalError(
        f"{stopped}; executions triggered before it may still be running. Once the "
        f"journal can be written, resume with: {options.resume_command}"
    )


def _record(prepared: Prepared, run: RunRecord) -> JournalSink:
    """Write the run (or take the resumed one over) before anything is sent."""
    store = prepared.store
    if prepared.prior is not None and run.run_id is not None:
        store.reopen_run(run.run_id, run)
        new = False
    else:
        new = True
        if prepared.abandon is not None:
            store.abandon(prepared.abandon.run_id)
            prepared.notice("note", prepared.abandon.note)
        run.run_id = store.create_run(
            run,
            plan_path=prepared.plan.path,
            plan_sha256=prepared.plan.sha256,
            options=prepared.options.recorded,
            started_at=time.time(),
        )
    prepared.lock.note(f"run {run.run_id}")
    return JournalSink(store, run.run_id, new=new)


def _operations(prepared: Prepared, bus: Bus, run: RunRecord) -> list[Sink]:
    """The sinks that tell the monitoring: the ETA (whose at_risk the notifier
    sends), the metrics file, then the webhooks and pings (last: the end of the run
    waits for them, up to 30 s)."""
    sinks: list[Sink] = []
    o, store, plan, prior = prepared.options, prepared.store, prepared.plan, prepared.prior
    first_started = prior.started_at if prior else None

    def warn(text: str) -> None:
        bus.tell(Notice(text, time.time()))

    history = store.workflow_history(step.workflow_id for step in plan.steps.values())
    sinks.append(
        Eta(
            plan,
            history,
            steps=prepared.selection.steps,
            max_parallel=run.max_parallel,
            tell=bus.tell,
            deadline_from=first_started,
        )
    )
    if o.metrics_dir:
        from runbook.notify.metrics import MetricsFile

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
    if prepared.webhooks or prepared.ping:
        from runbook.notify.notifier import Notifier

        assert run.run_id is not None  # written by _record
        sinks.append(
            Notifier(
                list(prepared.webhooks),
                prepared.ping,
                tell=bus.tell,
                recovered=prepared.previous_succeeded is False,
                late_told=prior is not None and store.late_notified(run.run_id),
            )
        )
    return sinks
