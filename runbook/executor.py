"""The executor: the asynchronous shell that runs a planned run against the API.

The scheduler core (runbook.schedule) decides when a step starts, is skipped or is
cancelled, and how the run ends; this module carries the run itself out: it starts
one asyncio task per step the core makes ready (runbook.run.step: its retries;
runbook.run.attempt: one attempt's life), watches the deadline, interrupts, and
finishes the run. Every event goes through the bus, awaited, before the executor goes
on (the journal first: see runbook.run.bus).

The trigger is never interrupted: a signal cancels polls and waits, but a step whose
POST is under way finishes it (for up to ``interrupt_grace`` seconds) and hands the
execution id to the sinks first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from runbook.errors import AuthError, ConfigError
from runbook.events import (
    Notice,
    RunFinished,
    RunLate,
    RunRecord,
    RunStarted,
    StepFinished,
    StepRecord,
    StepState,
)
from runbook.run import reasons
from runbook.run.bus import Bus
from runbook.run.planned import PlannedRun
from runbook.run.shell import Api, Clock, Halt, Shell
from runbook.run.slots import Refused, Slots
from runbook.run.step import run_step
from runbook.schedule import Schedule, Update

__all__ = ["INTERRUPT_GRACE", "Executor"]

INTERRUPT_GRACE = 30.0
"""How long an interrupt waits for triggers under way to be answered (their execution
ids), before it cuts them off and leaves their outcome unknown."""


class Executor:
    """Runs ``planned`` (its selected steps; other upstreams count as done).

    ``token_refreshes``: how many tokens the client has fetched since the first (for
    the run's record).
    """

    def __init__(
        self,
        planned: PlannedRun,
        api: Api,
        bus: Bus,
        *,
        clock: Clock | None = None,
        interrupt_grace: float = INTERRUPT_GRACE,
        token_refreshes: Callable[[], int] = lambda: 0,
    ) -> None:
        self.planned = planned
        self.plan, self.run, self.bus = planned.plan, planned.run, bus
        self.interrupt_grace = interrupt_grace
        self._token_refreshes = token_refreshes
        resumed = planned.resumed
        self._reattach = dict(resumed.reattach)
        self._ambiguous = dict(resumed.ambiguous)
        self._key = planned.order.key
        core = Schedule(
            planned.rules, order=self._key, succeeded=resumed.kept, running=resumed.reattach
        )
        self._shell = Shell(api, clock or Clock(), bus, core, Slots(self.run.max_parallel))
        self.core = core
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._all_done = asyncio.Event()
        self._bug: BaseException | None = None
        self.fatal: ConfigError | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._late_task: asyncio.Task[None] | None = None
        self._grace: asyncio.TimerHandle | None = None

    @property
    def halted(self) -> str | None:
        """Why the run was cut short (a signal, a lost token), once it was."""
        return self._shell.halted

    @property
    def triggers_under_way(self) -> int:
        """POSTs sent and not yet answered: an interrupt waits for them (their ids)."""
        return len(self._shell.triggering)

    # -- the run ----------------------------------------------------------------------

    async def execute(self) -> RunRecord:
        """Run to the end (or to a halt) and return the run's record."""
        wall = self._shell.clock.wall
        self.run.started_at = wall()
        self.run.spans.append((self.run.started_at, None))
        await self.bus.emit(RunStarted(self.run, self.run.started_at))
        await self._watch_deadline()
        for name in sorted(self._reattach, key=self._key):
            self._start(name)
        await self._settle(self.core.begin())
        if self._tasks:
            await self._all_done.wait()
        if self._bug is not None:
            raise self._bug  # an unexpected exception in a step task: surface it
        await self._finish()
        return self.run

    async def _watch_deadline(self) -> None:
        """At the deadline, if the run still goes, tell RunLate (at once for a resume
        that starts after it)."""
        if self.run.deadline is None:
            return
        start = self.planned.deadline_from
        start = self.run.started_at if start is None else start
        delay = start + self.run.deadline - self._shell.clock.wall()
        if delay <= 0:
            await self._late()
        else:
            self._deadline = asyncio.get_running_loop().call_later(delay, self._passed)

    def _passed(self) -> None:
        self._late_task = asyncio.get_running_loop().create_task(self._late())

    async def _late(self) -> None:
        self.run.late = True
        await self.bus.emit(RunLate(self.run, self._shell.clock.wall()))

    def interrupt(self, reason: str) -> None:
        """Stop at once: no new trigger; polls and waits end; in-flight steps stay pending.

        The executions keep running remotely: their ids are known, and a resume polls
        them again.
        """
        shell = self._shell
        if shell.halted is None:
            shell.halted = reason
        self.core.interrupt(reason)
        shell.slots.close()
        for name, task in self._tasks.items():
            if name not in shell.triggering:
                task.cancel()
        if shell.triggering and self._grace is None:
            self._grace = asyncio.get_running_loop().call_later(
                self.interrupt_grace, self._cut_triggers
            )

    def _cut_triggers(self) -> None:
        """The interrupt's wait for triggers under way is over: cut them off. Their
        outcome is unknown (the journal says *triggering*), so a resume will not repeat
        them without --retrigger-unknown."""
        for name in list(self._shell.triggering):
            self._tasks[name].cancel()

    # -- steps ------------------------------------------------------------------------

    async def _settle(self, update: Update) -> None:
        """Carry out what the core decided, then start what it made ready."""
        shell = self._shell
        if update.stopped is not None:
            self.run.reason = update.stopped
            for name in list(shell.waiting_retry):
                if not self.core.may_retry(name):
                    self._tasks[name].cancel()
            await self.bus.emit(
                Notice(
                    f"{update.stopped}: only clean-up steps (run_if failure, always, or a "
                    "mapping that accepts a failure) start from now on; "
                    "executions in flight are polled to their end",
                    shell.clock.wall(),
                    level="info",
                )
            )
        for ended in update.ended:
            shell.slots.withdraw(ended.name)
            await self._finish_step(self.run.steps[ended.name], ended.state, ended.reason)
        if shell.halted is None:
            ready = self.core.ready()
            for name in ready:  # each one reported failed with its reason: one of them
                if name in self._ambiguous:  # stopping the run must not cancel the others
                    self.core.start(name)
            for name in ready:
                self._start(name)

    def _start(self, name: str) -> None:
        task = asyncio.ensure_future(self._step(self.run.steps[name]))
        self._tasks[name] = task
        task.add_done_callback(lambda done: self._task_done(name, done))

    def _task_done(self, name: str, task: asyncio.Task[None]) -> None:
        # a callback, not asyncio.wait() over every task: that was O(steps) a wake-up
        del self._tasks[name]
        if not task.cancelled() and task.exception() is not None and self._bug is None:
            self._bug = task.exception()
            self.interrupt("internal error")
        if not self._tasks:
            self._all_done.set()

    async def _step(self, record: StepRecord) -> None:
        name = record.name
        try:
            ending, reason = await run_step(
                self._shell,
                self.plan.steps[name],
                record,
                self._key(name),
                reattach=self._reattach.pop(name, None),
                ambiguous=self._ambiguous.pop(name, None),
            )
        except (asyncio.CancelledError, Halt, Refused):
            return  # halted: the record stays as it is (pending or running)
        except ConfigError as error:
            self.fatal = self.fatal or error
            self.interrupt(str(error))
            return
        update = self.core.finish(name, ending)
        record.ignored = self.core.ignored(name)
        await self._finish_step(record, ending, reason)
        await self._settle(update)

    async def _finish_step(self, record: StepRecord, state: StepState, reason: str | None) -> None:
        record.state, record.reason, record.ended_at = state, reason, self._shell.clock.wall()
        await self.bus.emit(StepFinished(record, record.ended_at))

    async def _finish(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        if self._late_task is not None:
            await self._late_task  # told before the run's end
        if self.halted is None and self.core.unfinished:  # pragma: no cover - invariant
            raise AssertionError(f"the run ended with steps undecided: {self.core.unfinished}")
        auth = isinstance(self.fatal, AuthError)
        for record in self.run.ordered():
            if record.state in ("pending", "running"):  # halted before it ended
                record.reason = reasons.halted(record, self.fatal)
                record.state = "pending"
        run = self.run
        run.ended_at = self._shell.clock.wall()
        run.token_refreshes = self._token_refreshes()
        if self.halted is not None:
            run.state = "failed" if self.fatal else "interrupted"
            run.reason = self.halted
            run.exit_code = self.fatal.exit_code if self.fatal else None
            run.auth_failed = auth
        else:
            run.state = self.core.outcome()
        if run.spans:
            run.spans[-1] = (run.spans[-1][0], run.ended_at)
        await self.bus.emit(RunFinished(run, run.ended_at))
