"""The sink that keeps a run's forecast while it goes (:class:`Eta`): the forecast as
of the start, once the first triggers have been answered, then recomputed from what is
still to run as steps end, and the ``at_risk`` moment when the p90 end passes the
deadline. The forecast itself is :mod:`runbook.forecast`'s."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from runbook._compat import assert_never
from runbook.events import (
    AttemptFinished,
    AttemptTriggered,
    AttemptTriggering,
    Event,
    ExecutionSeen,
    Forecasted,
    ForecastMade,
    Notice,
    NotificationSent,
    RetryScheduled,
    RunFinished,
    RunLate,
    RunRecord,
    RunStarted,
    SignalReceived,
    StepFinished,
)
from runbook.forecast import SAMPLES, forecast
from runbook.plan import Plan

__all__ = ["Eta"]


class Eta:
    """The sink that keeps a run's forecast: told as of the start when there is
    history (once the first triggers have been answered: its work never delays one),
    recomputed from what is still to run when a step ends (at most once a ``every``
    seconds, and never for longer than a tenth of the time between two
    recomputations), and, with a deadline, the first time the p90 end passes it:
    ``at_risk``, once."""

    def __init__(
        self,
        plan: Plan,
        history: Mapping[int, Sequence[float]],
        *,
        steps: Iterable[str],
        max_parallel: int,
        tell: Callable[[Event], None],
        deadline_from: float | None = None,
        wall: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
        every: float = 1.0,
    ) -> None:
        self.plan = plan
        self.history = history
        self.steps = frozenset(steps)
        self.max_parallel = max_parallel
        self.deadline_at: float | None = None
        self._deadline_from = deadline_from
        self._tell = tell
        self._wall, self._clock = wall, clock
        self._every = every
        self._next = 0.0
        self._told_risk = False
        self._run: RunRecord | None = None
        self._first_due = False
        self._sending: set[tuple[str, int]] = set()
        """The triggers sent and not answered yet (step, attempt number)."""
        self._useful = any(
            plan.steps[name].workflow_id in history or plan.steps[name].estimate is not None
            for name in self.steps
        )

    def __call__(self, event: Event) -> None:
        match event:
            case RunStarted(run=run):
                if run.deadline is not None:
                    start = self._deadline_from
                    self.deadline_at = (start if start is not None else run.started_at) + (
                        run.deadline
                    )
                self._run = run
                self._first_due = self._useful
            case AttemptTriggering(step=step, attempt=attempt):
                self._sending.add((step.name, attempt.number))
            case (
                AttemptTriggered(step=step, attempt=attempt)
                | AttemptFinished(step=step, attempt=attempt)
            ):
                # the first forecast waits until the first triggers have left and been
                # answered: a forecast never delays a trigger, nor its id's journaling
                self._sending.discard((step.name, attempt.number))
                if self._first_due and not self._sending and self._run is not None:
                    self._first_due = False
                    self._forecast(self._run, first=True)
            case StepFinished():
                current = self._run
                if (
                    self._useful
                    and not self._first_due
                    and current is not None
                    and self._clock() >= self._next
                ):
                    self._forecast(current, first=False)
            case (
                ExecutionSeen()
                | RetryScheduled()
                | Notice()
                | SignalReceived()
                | RunLate()
                | NotificationSent()
                | Forecasted()
                | RunFinished()
            ):
                pass
            case _:
                assert_never(event)

    def _forecast(self, run: RunRecord, *, first: bool) -> None:
        began = self._clock()
        now = self._wall()
        if first:  # as of the start: what a resume kept is done, nothing runs yet
            now = run.started_at
            done = [name for name, step in run.steps.items() if step.state == "succeeded"]
            running: dict[str, float] = {}
        else:
            done = [
                name for name, step in run.steps.items() if step.state not in ("pending", "running")
            ]
            running = {  # how long each execution under way has run: its attempt's
                name: max(0.0, now - step.attempt.triggered_at)
                for name, step in run.steps.items()
                if step.state == "running" and step.attempt is not None
            }
        if not first and len(done) == len(run.steps):
            return
        result = forecast(
            self.plan,
            self.history,
            steps=self.steps,
            max_parallel=self.max_parallel,
            done=done,
            running=running,
            samples=SAMPLES if first else SAMPLES // 2,
        )
        took = self._clock() - began
        self._next = self._clock() + max(self._every, 10 * took)
        p50_end, p90_end = now + result.p50, now + result.p90
        risk = (
            self.deadline_at is not None
            and not self._told_risk
            and now < self.deadline_at < p90_end
        )
        self._told_risk = self._told_risk or risk
        bars = {
            name: (now + step.start, now + step.end)
            for name, step in result.steps.items()
            if step.start is not None and step.end is not None
        }
        if first and run.forecast is None:  # a resume keeps the run's own first one
            run.forecast = ForecastMade(now, p50_end, p90_end, bars)
        self._tell(
            Forecasted(
                run=run,
                p50_end=p50_end,
                p90_end=p90_end,
                critical_path=result.critical_path,
                first=first,
                at_risk=risk,
                at=now,
                steps=bars,
            )
        )
