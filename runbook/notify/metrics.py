"""The run's metrics as a Prometheus textfile, for node_exporter's textfile collector.

The plan's file in ``DIR`` (:func:`metrics_path`) is written when an invocation starts
and again when it ends, each time atomically (prometheus_client writes a temporary file
and renames it over the old one), so a scrape never reads half a file. The file written
at the start says the run is in progress and carries the last finished run's values
from the journal. A write that fails is a warning; the run goes on.

Distinct plans have distinct file names, but two can still meet at one file (``Sales``
and ``sales`` where the filesystem ignores case, or a file put there by hand): the file
is overwritten only when its series are labelled with this plan alone, and left as it
is, with a warning, when they are another's.
"""

from __future__ import annotations

import hashlib
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
from runbook.text import printable

if TYPE_CHECKING:
    from prometheus_client import Gauge

__all__ = ["MetricsFile", "check_metrics_dir", "metrics_path", "plans_in"]

_OUTCOMES = ("succeeded", "failed", "interrupted")
_STEP_STATES: tuple[str, ...] = get_args(StepState)


_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_SLUG_MAX = 100
"""A hashed name's readable part is cut there: the file name stays far from 255 bytes."""


def metrics_path(directory: str | os.PathLike[str], plan: str) -> Path:
    """``DIR/runbook_<plan>.prom`` for a name made of ``A-Za-z0-9_.-`` alone; for any
    other, ``DIR/runbook_<slug>+<hash>.prom``: the name with each other character made
    ``_`` (at most 100 characters of it), and the first 12 hex digits of the SHA-256 of
    the exact name. A ``+`` is in no name of the first kind, so no two plans share one."""
    if not _UNSAFE.search(plan):
        return Path(directory) / f"runbook_{plan}.prom"
    slug = _UNSAFE.sub("_", plan)[:_SLUG_MAX]
    digest = hashlib.sha256(plan.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return Path(directory) / f"runbook_{slug}+{digest}.prom"


def _old_path(directory: str | os.PathLike[str], plan: str) -> Path:
    """The file name before hashes: ``sales eu``'s and ``sales/eu``'s were one."""
    return Path(directory) / f"runbook_{_UNSAFE.sub('_', plan)}.prom"


def plans_in(path: Path) -> frozenset[str] | None:
    """The plans whose runbook series the file at ``path`` holds, by their ``plan``
    label: none for a file that is no runbook textfile, None when there is no file."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError):
        return frozenset()
    try:
        return frozenset(
            sample.labels["plan"]
            for family in text_string_to_metric_families(text)
            if family.name.startswith("runbook_")
            for sample in family.samples
            if "plan" in sample.labels
        )
    except ValueError:  # not the text format
        return frozenset()


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
        self._old = _old_path(directory, plan)
        self._last = last
        self._last_success = last_success_end
        self._first_started = first_started
        self._warn = warn
        self._refused = False

    def __call__(self, event: Event) -> None:
        match event:
            case RunStarted(run=run):
                self._remove_old()
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

    def _remove_old(self) -> None:
        """The plan's file by its old name, if the name changed: its series would be
        exported, stale, next to the new file's."""
        if self._old == self.path or plans_in(self._old) != frozenset({self.plan}):
            return
        try:
            self._old.unlink(missing_ok=True)
        except OSError as exc:
            self._warn(
                f"cannot remove {self._old}, this plan's metrics file by its old name: "
                f"{exc.strerror or exc}; remove it, or its series are exported twice"
            )

    def _ours(self) -> bool:
        """Whether the file is this plan's to overwrite: absent, or its series labelled
        with this plan alone. When it is not, that is said once, and left alone."""
        if self._refused:
            return False
        plans = plans_in(self.path)
        if plans is None or plans == frozenset({self.plan}):
            return True
        self._refused = True
        others = sorted(plans - {self.plan})
        names = ", ".join(repr(printable(other)) for other in others)
        if not others:
            whose = f"is not one runbook wrote for plan {self.plan!r}"
        elif len(others) == 1:
            whose = f"belongs to plan {names}"
        else:
            whose = f"belongs to plans {names}"
        self._warn(
            f"the metrics file {self.path} {whose}: it is left as it is, and this run's "
            "metrics are not written; the run goes on"
        )
        return False

    def _write(self, started: float, last: RunRecord | None, *, in_progress: bool) -> None:
        from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

        if not self._ours():
            return

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
