"""The executor: the asynchronous shell that runs a plan's selected steps against the API.

The scheduler core (runbook.schedule) decides when a step starts, is skipped or is
cancelled, and how the run ends; this module carries it out: one asyncio task per
started step, each attempt holding one of ``max_parallel`` slots from its trigger to its
execution's end (slots are granted in stage, then name, order), polling, timeouts,
retries and signals. Every event goes to the sinks, awaited, before the executor goes on
(see runbook.events).

The trigger is never interrupted: a signal cancels polls and waits, but a step whose
POST is under way finishes it and hands the execution id to the sinks first.
"""

from __future__ import annotations

import asyncio
import heapq
import inspect
import itertools
import random
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol, TypeVar

from runbook.api import Execution
from runbook.durations import format_duration
from runbook.errors import (
    ApiError,
    AuthError,
    ConfigError,
    TriggerOutcomeUnknown,
)
from runbook.events import (
    TERMINAL_STATES,
    AttemptFinished,
    AttemptRecord,
    AttemptTriggered,
    AttemptTriggering,
    Event,
    ExecutionSeen,
    Notice,
    RetryScheduled,
    RunFinished,
    RunLate,
    RunRecord,
    RunStarted,
    Sink,
    StepFinished,
    StepRecord,
)
from runbook.plan import Plan, Step
from runbook.polling import jittered
from runbook.schedule import Ending, Rule, Schedule, Update

__all__ = ["Api", "Executor", "left_running", "poll_delay"]

TIMEOUT_REASON = "timed out (the remote execution may still be running)"
INTERRUPT_GRACE = 30.0
"""How long an interrupt waits for triggers under way to be answered (their execution
ids), before it cuts them off and leaves their outcome unknown."""


class Api(Protocol):
    """What the executor needs of the API client."""

    async def trigger(self, workflow_id: int) -> Execution: ...

    async def get_execution(self, execution_id: int) -> Execution: ...


def poll_delay(step: Step, elapsed: float, rng: random.Random) -> float:
    """The wait before the next poll of an execution running for ``elapsed`` seconds.

    Starts at ``poll_interval``, grows with the running time (POLL_FRACTION) up to
    ``max_poll_interval``, with up to 10 % of jitter downwards so that thousands of
    executions triggered together do not poll together.
    """
    return jittered(step.poll_wait(elapsed), rng)


T = TypeVar("T")

if sys.version_info >= (3, 11):

    async def _within(awaitable: Awaitable[T], seconds: float) -> T:
        """``awaitable``, cancelled with TimeoutError after ``seconds`` (no extra task)."""
        async with asyncio.timeout(seconds):
            return await awaitable

else:  # pragma: no cover - Python 3.10
    _within = asyncio.wait_for


class _Slots:
    """``max_parallel`` slots, granted by priority; a waiter can be withdrawn, and closing
    refuses every waiter."""

    def __init__(self, count: int) -> None:
        self.free = count
        self.closed = False
        self._waiters: list[tuple[Any, int, asyncio.Future[bool]]] = []
        self._waiting: dict[str, asyncio.Future[bool]] = {}
        self._order = itertools.count()

    async def acquire(self, priority: Any, name: str) -> bool:
        if self.closed:
            return False
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return True
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._order), future))
        self._waiting[name] = future
        try:
            return await future
        finally:
            self._waiting.pop(name, None)

    def release(self) -> None:
        while self._waiters:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(True)  # the slot passes straight to the next waiter
                return
        self.free += 1

    def withdraw(self, name: str) -> None:
        """``name`` no longer wants a slot: its acquire answers False (unless granted)."""
        future = self._waiting.get(name)
        if future is not None and not future.done():
            future.set_result(False)

    def close(self) -> None:
        self.closed = True
        for _, _, future in self._waiters:
            if not future.done():
                future.set_result(False)
        self._waiters.clear()


class _Halt(Exception):
    """Raised inside a step task when the step must not go on: the run was interrupted,
    or a stop ended the step before it started."""


class Executor:
    """Runs ``steps`` of ``plan`` (a selection; other upstreams count as done).

    Every decision of when a step starts, is skipped or cancelled, and of the run's
    outcome, is the scheduler core's (runbook.schedule); this class carries them out.
    """

    def __init__(
        self,
        plan: Plan,
        api: Api,
        *,
        steps: Iterable[str] | None = None,
        stages: Sequence[Sequence[str]] | None = None,
        assumed_done: Iterable[str] = (),
        max_parallel: int | None = None,
        sinks: Sequence[Sink] = (),
        run_id: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], Any] = asyncio.sleep,
        rng: random.Random | None = None,
        prior: RunRecord | None = None,
        retrigger_unknown: bool = False,
        interrupt_grace: float = INTERRUPT_GRACE,
        deadline_from: float | None = None,
        token_refreshes: Callable[[], int] = lambda: 0,
    ) -> None:
        """``deadline_from``: when the run's first invocation started (epoch seconds),
        which the plan's ``deadline`` counts from; default, this invocation's start.
        ``token_refreshes``: how many tokens the client has fetched since the first."""
        self._token_refreshes = token_refreshes
        self.plan = plan
        self._deadline_from = deadline_from
        self._deadline: asyncio.TimerHandle | None = None
        self._late_task: asyncio.Task[None] | None = None
        self.interrupt_grace = interrupt_grace
        self._grace: asyncio.TimerHandle | None = None
        self.api = api
        selected = set(plan.steps if steps is None else steps)
        if stages is None:
            stages = [[name for name in stage if name in selected] for stage in plan.stages]
            stages = [stage for stage in stages if stage]
        self.stage_of = {name: number for number, stage in enumerate(stages) for name in stage}
        self.run = RunRecord(
            plan=plan.name,
            run_id=run_id,
            max_parallel=max_parallel or plan.max_parallel,
            steps={
                name: StepRecord(
                    name,
                    plan.steps[name].workflow_id,
                    self.stage_of[name] + 1,
                    run_if=plan.steps[name].run_if,
                    on_failure=plan.steps[name].on_failure,
                )
                for stage in stages
                for name in stage
            },
            assumed_done=tuple(sorted(assumed_done)),
            deadline=plan.deadline,
        )
        self.sinks = list(sinks)
        self._clock, self._wall, self._sleep = clock, wall, sleep
        self._rng = rng or random.Random()
        self._slots = _Slots(self.run.max_parallel)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._critical: set[str] = set()  # steps whose trigger is under way
        self._waiting_retry: set[str] = set()
        self.halted: str | None = None  # why the run was cut short (signal, auth)
        self.fatal: ConfigError | None = None
        self._all_done = asyncio.Event()
        self._bug: BaseException | None = None
        self._reattach: dict[str, AttemptRecord] = {}
        self._ambiguous: dict[str, str] = {}
        kept: list[str] = []
        if prior is not None:
            kept = self._take_over(prior, retrigger_unknown)
        self.core = Schedule(
            (
                Rule(
                    name,
                    plan.upstreams(name, self.run.steps.keys()),
                    plan.steps[name].run_if,
                    plan.steps[name].on_failure,
                )
                for name in self.run.steps
            ),
            order=self._priority,
            succeeded=kept,
            running=self._reattach,
        )

    def _priority(self, name: str) -> tuple[int, str]:
        return self.stage_of[name], name

    def _take_over(self, prior: RunRecord, retrigger_unknown: bool) -> list[str]:
        """Resume ``prior``: succeeded steps stay done (a ``failure`` or ``always`` step
        only while none of its upstreams runs again), in-flight executions are polled
        again, ambiguous triggers are not repeated unless the user said so. Returns the
        steps kept as succeeded."""
        kept: set[str] = set()
        for name in sorted(self.run.steps, key=self._priority):  # upstreams first
            record = self.run.steps[name]
            old = prior.steps.get(name)
            if old is None or old.workflow_id != record.workflow_id:
                continue  # a new or changed step: it runs as new
            record.attempts = list(old.attempts)
            record.started_at, record.ended_at = old.started_at, old.ended_at
            last = record.attempt
            if old.state == "succeeded" or (
                last is not None and last.ended_at is not None and last.state == "succeeded"
            ):  # (killed between the attempt's end and the step's: the attempt decides)
                upstreams = self.plan.upstreams(name, self.run.steps.keys())
                if record.run_if == "success" or all(up in kept for up in upstreams):
                    record.state, record.reason = "succeeded", None
                    kept.add(name)
                # else judged again: an upstream runs again
            elif (
                last is not None
                and last.execution_id is not None
                and (last.ended_at is None or _outcome_unseen(old, last))
            ):
                self._reattach[name] = last
            elif (
                last is not None
                and not retrigger_unknown
                and (
                    last.state == "unknown" or (last.ended_at is None and last.execution_id is None)
                )
            ):
                self._ambiguous[name] = (
                    f"the trigger of attempt {last.number} got no answer, so an execution "
                    "may exist; not triggered again (--resume --retrigger-unknown triggers "
                    "it anyway, at the risk of running it twice)"
                )
        return sorted(kept, key=self._priority)

    # -- the run ----------------------------------------------------------------------

    async def execute(self) -> RunRecord:
        """Run to the end (or to a halt) and return the run's record."""
        self.run.started_at = self._wall()
        await self._emit(RunStarted(self.run, self.run.started_at))
        await self._watch_deadline()
        for name in sorted(self._reattach, key=self._priority):
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
        start = self._deadline_from if self._deadline_from is not None else self.run.started_at
        delay = start + self.run.deadline - self._wall()
        if delay <= 0:
            await self._late()
        else:
            self._deadline = asyncio.get_running_loop().call_later(delay, self._passed)

    def _passed(self) -> None:
        self._late_task = asyncio.get_running_loop().create_task(self._late())

    async def _late(self) -> None:
        self.run.late = True
        await self._emit(RunLate(self.run, self._wall()))

    @property
    def triggers_under_way(self) -> int:
        """POSTs sent and not yet answered: an interrupt waits for them (their ids)."""
        return len(self._critical)

    def interrupt(self, reason: str) -> None:
        """Stop at once: no new trigger; polls and waits end; in-flight steps stay pending.

        The executions keep running remotely: their ids are known, and a resume polls
        them again.
        """
        if self.halted is None:
            self.halted = reason
        self.core.interrupt(reason)
        self._slots.close()
        for name, task in self._tasks.items():
            if name not in self._critical:
                task.cancel()
        if self._critical and self._grace is None:
            self._grace = asyncio.get_running_loop().call_later(
                self.interrupt_grace, self._cut_triggers
            )

    def _cut_triggers(self) -> None:
        """The interrupt's wait for triggers under way is over: cut them off. Their
        outcome is unknown (the journal says *triggering*), so a resume will not repeat
        them without --retrigger-unknown."""
        for name in list(self._critical):
            self._tasks[name].cancel()

    # -- steps ------------------------------------------------------------------------

    async def _settle(self, update: Update) -> None:
        """Carry out what the core decided, then start what it made ready."""
        if update.stopped is not None:
            self.run.reason = update.stopped
            for name in list(self._waiting_retry):
                if not self.core.may_retry(name):
                    self._tasks[name].cancel()
            await self._emit(
                Notice(
                    f"{update.stopped}: only run_if failure/always steps start from now on; "
                    "executions in flight are polled to their end",
                    self._wall(),
                    level="info",
                )
            )
        for ended in update.ended:
            self._slots.withdraw(ended.name)
            record = self.run.steps[ended.name]
            await self._finish_step(record, ended.state, ended.reason)
        if self.halted is None:
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
        step = self.plan.steps[record.name]
        try:
            ending, reason = await self._attempts(step, record)
        except asyncio.CancelledError:
            return  # halted: the record stays as it is (pending or running)
        except _Halt:
            return
        except ConfigError as error:
            self.fatal = self.fatal or error
            self.interrupt(str(error))
            return
        update = self.core.finish(record.name, ending)
        record.ignored = self.core.ignored(record.name)
        await self._finish_step(record, ending, reason)
        await self._settle(update)

    async def _attempts(self, step: Step, record: StepRecord) -> tuple[Ending, str | None]:
        priority = self._priority(step.name)
        done = len(record.attempts)
        reason: str | None = None
        for tried in range(1, step.retries + 2):
            number = done + tried
            reattach = step.name in self._reattach
            if step.name in self._ambiguous:  # started when it was handed out
                return "failed", self._ambiguous.pop(step.name)
            if not await self._slots.acquire(priority, step.name):
                raise _Halt  # interrupted, or ended by a stop while it waited
            if tried == 1 and not reattach:
                if not self.core.start(step.name):
                    self._slots.release()
                    raise _Halt  # a stop ended it as its slot came free
                await self._started(record)
            elif tried > 1 and not self.core.may_retry(step.name):
                self._slots.release()  # the run began to stop while this retry waited
                return "failed", f"{reason} (not retried: the run is stopping)"
            try:
                if reattach:
                    outcome, reason = await self._reattached(step, record)
                else:
                    outcome, reason = await self._attempt(step, record, number)
            finally:
                self._slots.release()
            if outcome == "succeeded":
                return "succeeded", None
            last = tried == step.retries + 1
            if outcome != "failed" or last:
                if outcome == "failed" and tried > 1:
                    reason = f"{reason} (attempt {tried} of {tried})"
                return "failed", reason
            if not self.core.may_retry(step.name):
                return "failed", f"{reason} (not retried: the run is stopping)"
            record.reason = reason
            await self._emit(RetryScheduled(record, step.retry_delay, self._wall()))
            self._waiting_retry.add(step.name)
            try:
                await self._sleep(step.retry_delay)
            except asyncio.CancelledError:
                if self.halted is not None:
                    raise
                # a stop cancelled the wait: the failure stands
            finally:
                self._waiting_retry.discard(step.name)
            if not self.core.may_retry(step.name):
                return "failed", f"{reason} (not retried: the run is stopping)"
        raise AssertionError("unreachable: the last attempt returns")  # pragma: no cover

    async def _started(self, record: StepRecord) -> None:
        """Say why a clean-up step starts (its run_if held on its upstreams' ends)."""
        why = self.core.start_reason(record.name)
        if why is not None:
            record.why = why
            await self._emit(Notice(f"starting: {why}", self._wall(), record, level="info"))

    async def _attempt(self, step: Step, record: StepRecord, number: int) -> tuple[str, str | None]:
        """Trigger and poll once; ``(outcome, reason)`` with outcome succeeded, failed
        (the execution failed: retries apply) or error (they do not)."""
        attempt = AttemptRecord(number=number, triggered_at=self._wall())
        record.attempts.append(attempt)
        if record.state == "pending":
            record.state, record.started_at = "running", attempt.triggered_at
        self._critical.add(step.name)
        try:
            await self._emit(AttemptTriggering(record, attempt, attempt.triggered_at))
            started = self._clock()
            try:
                execution = await _within(self.api.trigger(step.workflow_id), step.timeout)
            except asyncio.TimeoutError:  # the step's timeout bounds the request too
                attempt.state = "unknown"
                reason = (
                    f"trigger outcome unknown for workflow {step.workflow_id}: the step's "
                    f"timeout ({format_duration(step.timeout)}) ran out before the API "
                    "answered; an execution may have been created, so it was not sent again"
                )
                return await self._attempt_over(record, attempt, "unknown", reason)
            except TriggerOutcomeUnknown as error:
                attempt.state = "unknown"
                return await self._attempt_over(record, attempt, "unknown", str(error))
            except ConfigError:  # refused before anything was created: a bad token, TLS
                attempt.state, attempt.ended_at = "not created", self._wall()
                await self._emit(AttemptFinished(record, attempt, "error", attempt.ended_at))
                raise
            except ApiError as error:
                attempt.state = "not created"
                return await self._attempt_over(record, attempt, "error", str(error))
            self._observe(attempt, execution)
            await self._emit(AttemptTriggered(record, attempt, self._wall()))
        finally:
            self._critical.discard(step.name)
        if self.halted is not None:
            raise _Halt
        return await self._poll(step, record, attempt, execution, started)

    async def _reattached(self, step: Step, record: StepRecord) -> tuple[str, str | None]:
        """Poll an execution a previous invocation triggered: never trigger it again."""
        attempt = self._reattach.pop(step.name)
        record.state = "running"
        raw = attempt.record or {"id": attempt.execution_id, "state": attempt.state}
        execution = Execution.from_record(raw)
        started = self._clock() - max(0.0, self._wall() - attempt.triggered_at)
        await self._emit(
            Notice(
                f"re-attached to execution {execution.id}, triggered by an earlier invocation",
                self._wall(),
                record,
                level="info",
            )
        )
        return await self._poll(step, record, attempt, execution, started)

    async def _poll(
        self,
        step: Step,
        record: StepRecord,
        attempt: AttemptRecord,
        execution: Execution,
        started: float,
    ) -> tuple[str, str | None]:
        deadline = started + step.timeout
        try:  # one timer for the whole attempt, not one per poll
            outcome, reason = await _within(
                self._poll_to_end(step, record, attempt, execution, started, deadline),
                max(0.0, deadline - self._clock()),
            )
        except asyncio.TimeoutError:  # a slow answer, a long Retry-After, or just long
            outcome, reason = "timed out", TIMEOUT_REASON
        return await self._attempt_over(record, attempt, outcome, reason)

    async def _poll_to_end(
        self,
        step: Step,
        record: StepRecord,
        attempt: AttemptRecord,
        execution: Execution,
        started: float,
        deadline: float,
    ) -> tuple[str, str | None]:
        """Poll until the execution ends: (outcome, reason) for :meth:`_attempt_over`."""
        warned = False
        while not execution.terminal:
            now = self._clock()
            if now >= deadline:
                return "timed out", TIMEOUT_REASON
            await self._sleep(min(poll_delay(step, now - started, self._rng), deadline - now))
            try:
                latest = await self.api.get_execution(execution.id)
            except ConfigError:
                raise
            except ApiError as error:
                return "error", str(error)
            if latest.raw != execution.raw:
                previous = attempt.state
                self._observe(attempt, latest)
                await self._emit(ExecutionSeen(record, attempt, previous, self._wall()))
            execution = latest
            if not execution.known_state and not warned:
                warned = True
                await self._emit(
                    Notice(
                        f"execution {execution.id} reports an unknown state {execution.state!r}; "
                        "polling on until the step's timeout",
                        self._wall(),
                        record,
                    )
                )
        if execution.state == "succeeded":
            return "succeeded", None
        return "failed", f"execution {execution.id} failed"

    def _observe(self, attempt: AttemptRecord, execution: Execution) -> None:
        attempt.execution_id = execution.id
        attempt.state = execution.state
        attempt.start_at, attempt.end_at = execution.start_at, execution.end_at
        attempt.errors, attempt.warnings = execution.errors, execution.warnings
        attempt.record = dict(execution.raw)

    async def _attempt_over(
        self, record: StepRecord, attempt: AttemptRecord, outcome: str, reason: str | None
    ) -> tuple[str, str | None]:
        attempt.ended_at = self._wall()
        await self._emit(AttemptFinished(record, attempt, outcome, attempt.ended_at))
        return (
            "succeeded" if outcome == "succeeded" else "failed" if outcome == "failed" else "error"
        ), reason

    async def _finish_step(self, record: StepRecord, state: Any, reason: str | None) -> None:
        record.state, record.reason, record.ended_at = state, reason, self._wall()
        await self._emit(StepFinished(record, record.ended_at))

    async def _finish(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        if self._late_task is not None:
            await self._late_task  # told before the run's end
        if self.halted is None and self.core.unfinished:  # pragma: no cover - invariant
            raise AssertionError(f"the run ended with steps undecided: {self.core.unfinished}")
        for record in self.run.ordered():
            if record.state in ("pending", "running"):  # halted before it ended
                record.reason = _halted_reason(record, isinstance(self.fatal, AuthError))
                record.state = "pending"
        self.run.ended_at = self._wall()
        self.run.token_refreshes = self._token_refreshes()
        if self.halted is not None:
            self.run.state = "failed" if self.fatal else "interrupted"
            self.run.reason = self.halted
            self.run.exit_code = self.fatal.exit_code if self.fatal else None
            self.run.auth_failed = isinstance(self.fatal, AuthError)
        else:
            self.run.state = self.core.outcome()
        await self._emit(RunFinished(self.run, self.run.ended_at))

    def tell(self, event: Event) -> None:
        """Hand ``event`` to every sink from outside the run (a signal handler), without
        waiting: no sink waits on the events told this way."""
        for sink in self.sinks:
            sink(event)

    async def _emit(self, event: Event) -> None:
        for sink in self.sinks:
            result = sink(event)
            if inspect.isawaitable(result):
                await result


Flying = list[tuple[StepRecord, int]]


def left_running(run: RunRecord) -> tuple[Flying, Flying]:
    """The executions ``run`` left without seeing them end, as (step, execution id): those
    a new run would duplicate (its process died, a signal or a lost token or API stopped
    it; id 0: a trigger cut off unanswered, which may have created one), and those whose
    step timed out (the step's outcome is decided; they may still run on Nexadata)."""
    unseen: Flying = []
    timed_out: Flying = []
    for step in run.ordered():
        attempt = step.attempt
        if attempt is None:
            continue
        if attempt.execution_id is None:  # a POST cut off unanswered: one may exist
            if attempt.ended_at is None and attempt.state != "not created":
                unseen.append((step, 0))
            continue
        if attempt.ended_at is None or _outcome_unseen(step, attempt):
            unseen.append((step, attempt.execution_id))
        elif step.reason == TIMEOUT_REASON and attempt.state not in TERMINAL_STATES:
            timed_out.append((step, attempt.execution_id))
    return unseen, timed_out


def _outcome_unseen(step: StepRecord, attempt: AttemptRecord) -> bool:
    """The attempt ended without runbook seeing how its execution ended, because the
    API could not be polled (not because of the step's timeout, a policy): the execution
    may have run on, so a resume polls it again rather than triggering a second one."""
    return (
        attempt.state not in TERMINAL_STATES
        and attempt.state != "unknown"
        and step.state == "failed"
        and step.reason != TIMEOUT_REASON
    )


def _halted_reason(record: StepRecord, auth: bool) -> str:
    attempt = record.attempt
    if attempt is None:
        if auth:
            return "not started: the run ended for want of a usable token"
        return "not started: the run was interrupted"
    if attempt.state == "not created":
        return "not started: its trigger was refused, and the run halted"
    if attempt.ended_at is not None:
        return f"interrupted before a retry; {record.reason}"
    if attempt.execution_id is None:
        return "interrupted while triggering"
    if auth:
        return (
            f"execution {attempt.execution_id} was {attempt.state} when the run lost its "
            "token; it may still be running on Nexadata"
        )
    return (
        f"interrupted while execution {attempt.execution_id} was {attempt.state}; "
        "it may still be running"
    )
