"""The run's metrics as a Prometheus textfile, for node_exporter's textfile collector.

``DIR/runbook_<plan>.prom`` is written when an invocation starts and again when it
ends, each time atomically (prometheus_client writes a temporary file and renames it
over the old one), so a scrape never reads half a file. The file written at the start
says the run is in progress and carries the last finished run's values from the
journal. A write that fails is a warning; the run goes on.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, get_args

from runbook._compat import assert_never
from runbook.errors import UsageError
from runbook.events import (
    AttemptFinished,
    AttemptTriggered,
    AttemptTriggering,
    Event,
    ExecutionSeen,
    Forecasted,
    Notice,
    NotificationSent,
    RetryScheduled,
    RunFinished,
    RunLate,
    RunRecord,
    RunStarted,
    SignalReceived,
    StepFinished,
    StepState,
)

if TYPE_CHECKING:
    from prometheus_client import Gauge

__all__ = ["MetricsFile", "check_metrics_dir", "metrics_path"]

_OUTCOMES = ("succeeded", "failed", "interrupted")
_STEP_STATES: tuple[str, ...] = get_args(StepState)


def metrics_path(directory: str | os.PathLike[str], plan: str) -> Path:
    """``DIR/runbook_<plan>.prom``, each character of the name outside
    ``A-Za-z0-9_.-`` made ``_``."""
    return Path(directory) / f"runbook_{re.sub(r'[^A-Za-z0-9_.-]', '_', plan)}.prom"


def check_metrics_dir(directory: str) -> None:
    """A UsageError (exit 2), before anything is sent, unless ``directory`` is a
    directory runbook can write in."""
    where = f"--metrics-dir {directory}"
    if not os.path.isdir(directory):
        reason = "not a directory" if os.path.exists(directory) else "no such directory"
        raise UsageError(f"{where}: {reason}")
    try:
        handle, probe = tempfile.mkstemp(dir=directory, prefix=".runbook-write-test-")
    except OSError as exc:
        raise UsageError(f"{where}: cannot write there ({exc.strerror or exc})") from None
    os.close(handle)
    os.unlink(probe)


class MetricsFile:
    """The sink: the file at a run's start and end.

    ``last``: the plan's last finished run as the journal has it (None on its first);
    ``last_success_end``: when its last successful run ended; ``first_started``: when
    this run's first invocation started (a resumed run's duration counts from there).
    """

    def __init__(
        self,
        directory: str,
        plan: str,
        *,
        last: RunRecord | None = None,
        last_success_end: float | None = None,
        first_started: float | None = None,
        warn: Callable[[str], None] = lambda text: None,
    ) -> None:
        self.path = metrics_path(directory, plan)
        self.plan = plan
        self._last = last
        self._last_success = last_success_end
        self._first_started = first_started
        self._warn = warn

    def __call__(self, event: Event) -> None:
        match event:
            case RunStarted(run=run):
                self._write(run.started_at, self._last, in_progress=True)
            case RunFinished(run=run):
                if run.state == "succeeded" and run.ended_at is not None:
                    self._last_success = run.ended_at
                self._write(run.started_at, run, in_progress=False)
            case (
                AttemptTriggering()
                | AttemptTriggered()
                | ExecutionSeen()
                | AttemptFinished()
                | RetryScheduled()
                | StepFinished()
                | Notice()
                | SignalReceived()
                | RunLate()
                | NotificationSent()
                | Forecasted()
            ):
                pass
            case _:
                assert_never(event)

    def _write(self, started: float, last: RunRecord | None, *, in_progress: bool) -> None:
        from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

        registry = CollectorRegistry()

        def gauge(name: str, text: str, labels: Iterable[str] = ()) -> Gauge:
            return Gauge(name, text, ["plan", *labels], registry=registry)

        plan = self.plan
        gauge("runbook_run_in_progress", "1 while the run is going, 0 after").labels(plan).set(
            int(in_progress)
        )
        gauge("runbook_run_last_start_timestamp_seconds", "Start of this invocation").labels(
            plan
        ).set(started)
        if self._last_success is not None:
            gauge(
                "runbook_run_last_success_timestamp_seconds",
                "End of the last run that succeeded",
            ).labels(plan).set(self._last_success)
        if last is not None and last.ended_at is not None:
            self._finished(gauge, last, self._first_started if not in_progress else None)
        try:
            write_to_textfile(str(self.path), registry)
        except OSError as exc:
            self._warn(
                f"cannot write the metrics file {self.path}: {exc.strerror or exc}; the run goes on"
            )

    def _finished(self, gauge: Callable[..., Gauge], run: RunRecord, first: float | None) -> None:
        """The values of a finished run: its end, duration, outcome and steps."""
        plan = self.plan
        assert run.ended_at is not None
        start = first if first is not None else run.started_at
        gauge(
            "runbook_run_last_end_timestamp_seconds", "End of the last finished invocation"
        ).labels(plan).set(run.ended_at)
        gauge(
            "runbook_run_duration_seconds",
            "The last finished run's duration, from its first invocation's start",
        ).labels(plan).set(max(0.0, run.ended_at - start))
        outcome = gauge("runbook_run_outcome", "1 for the last finished run's outcome", ["outcome"])
        for name in _OUTCOMES:
            outcome.labels(plan, name).set(int(run.state == name))
        steps = gauge("runbook_steps", "Steps of the last run in each state", ["state"])
        for state in _STEP_STATES:
            steps.labels(plan, state).set(run.count(state))
        duration = gauge(
            "runbook_step_duration_seconds",
            "Each step's duration in the last run, from its first trigger to its end",
            ["step", "workflow_id"],
        )
        attempts = gauge(
            "runbook_step_attempts", "Attempts made by each step", ["step", "workflow_id"]
        )
        for step in run.ordered():
            labels = (plan, step.name, str(step.workflow_id))
            attempts.labels(*labels).set(len(step.attempts))
            if step.attempts and step.ended_at is not None:
                took = step.ended_at - step.attempts[0].triggered_at
                duration.labels(*labels).set(max(0.0, took))
