"""The API's times across everything a ``datetime`` can hold and beyond — years 1 and
9999, offsets of a day, leap seconds, ±inf, NaN, 1e400, junk — through every consumer of
a time: the journal's history, the forecast and its ETA, the deadline, the metrics file,
the report and JUnit file, plain and JSON lines, the summary, the live view and
``status``. None may fail; none may believe a claim outside what runbook saw."""

from __future__ import annotations

import asyncio
import io
import json
import math
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from runbook.apitimes import SKEW, believed_span
from runbook.durations import format_duration
from runbook.eta import Eta
from runbook.events import (
    AttemptFinished,
    AttemptRecord,
    AttemptTriggering,
    Event,
    RunFinished,
    RunRecord,
    RunStarted,
    StepFinished,
    StepRecord,
)
from runbook.forecast import forecast
from runbook.journal import JournalSink, Store
from runbook.journal.store import RunRow
from runbook.notify.metrics import MetricsFile
from runbook.plan import load_plan
from runbook.render import report
from runbook.render.journalview import write_status
from runbook.render.jsonlines import JsonLines
from runbook.render.live import LiveView
from runbook.render.runlog import PlainLines
from runbook.render.summary import write_summary
from runbook.render.wording import clock, stamp, step_duration

EPOCH = 1_800_000_000.0

offsets = st.timedeltas(
    min_value=-timedelta(hours=23, minutes=59), max_value=timedelta(hours=23, minutes=59)
).map(timezone)
claims = st.one_of(
    st.none(),
    st.datetimes(timezones=offsets).map(datetime.isoformat),
    st.datetimes().map(lambda moment: moment.isoformat() + "Z"),
    st.sampled_from(
        [
            "9999-12-31T23:59:59.999999Z",
            "9999-12-31T23:59:59.999999-23:59",
            "0001-01-01T00:00:00Z",
            "0001-01-01T00:00:00+23:59",
            "2026-12-31T23:59:60Z",
            "2026-01-01T00:00:00+24:00",
            "inf",
            "-inf",
            "NaN",
            "1e400",
            "",
        ]
    ),
    st.text(max_size=30),
)
spans = st.floats(min_value=0.0, max_value=1e6)


@given(claims, claims, spans)
def test_a_claim_is_believed_only_within_what_runbook_saw(start, end, took) -> None:
    triggered, ended = EPOCH, EPOCH + took
    believed = believed_span(start, end, triggered, ended)
    if believed is not None:
        assert triggered - SKEW <= believed[0] <= believed[1] <= ended + SKEW


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_every_formatting_of_a_time_survives_any_value(value: float) -> None:
    for show in (stamp, clock, format_duration):
        assert isinstance(show(value), str)


PLAN = (
    "version: 1\nname: fuzz\ndeadline: 1h\nworkflows:\n"
    "  a: {workflow_id: 1}\n  b: {workflow_id: 2, depends_on: a}\n"
)


def a_run(start_a, end_a, start_b, end_b, took: float) -> RunRecord:
    steps = {}
    for stage, (name, workflow, start_at, end_at) in enumerate(
        (("a", 1, start_a, end_a), ("b", 2, start_b, end_b)), start=1
    ):
        triggered = EPOCH + (stage - 1) * took
        attempt = AttemptRecord(1, triggered, execution_id=stage, state="succeeded")
        attempt.start_at, attempt.end_at, attempt.ended_at = start_at, end_at, triggered + took
        attempt.record = {"id": stage, "state": "succeeded", "start_at": start_at, "end_at": end_at}
        steps[name] = StepRecord(
            name, workflow, stage, "succeeded", None, [attempt], triggered, triggered + took
        )
    return RunRecord(
        "fuzz", 1, 4, steps, state="succeeded", started_at=EPOCH, ended_at=EPOCH + 2 * took,
        deadline=3600.0,
    )  # fmt: skip


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(claims, claims, claims, claims, spans)
def test_every_consumer_of_a_time_takes_any_claim(start_a, end_a, start_b, end_b, took) -> None:
    run = a_run(start_a, end_a, start_b, end_b, took)
    bound = took + 2 * SKEW
    for step in run.steps.values():
        shown = step_duration(step)
        assert shown is not None and 0 <= shown <= bound
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        plan_path = directory / "fuzz.yaml"
        plan_path.write_text(PLAN)
        plan = load_plan(plan_path)
        # the journal, its history and the forecast made of it
        store = Store(directory)
        journal(store, run)
        history = store.workflow_history([1, 2])
        assert all(0 <= value <= bound for values in history.values() for value in values)
        predicted = forecast(plan, history)
        assert math.isfinite(predicted.p90) and predicted.p90 <= 2 * bound
        told: list[Event] = []
        eta = Eta(plan, history, steps=plan.steps, max_parallel=4, tell=told.append)
        # every renderer and sink, fed the run's events
        out = io.StringIO()
        console = Console(file=out, width=100, force_terminal=False)
        live = LiveView(console, clock=lambda: EPOCH)
        metrics = MetricsFile(str(directory), "fuzz", first_started=EPOCH)
        sinks = [eta, PlainLines(out), JsonLines(out), live, metrics]
        for event in events(run):
            for sink in sinks:
                sink(event)
            for said in told:
                PlainLines(out)(said)
                JsonLines(out)(said)
            told.clear()
        console.print(live.render())
        live.live.stop()
        write_summary(out, run)
        json.dumps(report.report_document(run), allow_nan=False)
        report.write_junit(str(directory / "j.xml"), run)
        row = RunRow(1, "fuzz", str(plan_path), "", 1, "h", "succeeded", None, 4, (), EPOCH, None)
        for fmt in ("text", "json"):
            write_status(out, row, store.load_run(store.run_row(1)), fmt)  # type: ignore[arg-type]
        store.close()


def journal(store: Store, run: RunRecord) -> None:
    run.run_id = store.create_run(
        run, plan_path="fuzz.yaml", plan_sha256="", options={}, started_at=run.started_at
    )
    sink = JournalSink(store, run.run_id)

    async def main() -> None:
        for event in events(run):
            result = sink(event)
            if result is not None:
                await result

    asyncio.run(main())
    sink.close()


def events(run: RunRecord) -> list[Event]:
    found: list[Event] = [RunStarted(run, run.started_at)]
    for step in run.ordered():
        attempt = step.attempts[0]
        found += [
            AttemptTriggering(step, attempt, attempt.triggered_at),
            AttemptFinished(step, attempt, "succeeded", attempt.ended_at or 0.0),
            StepFinished(step, step.ended_at or 0.0),
        ]
    return [*found, RunFinished(run, run.ended_at or 0.0)]
