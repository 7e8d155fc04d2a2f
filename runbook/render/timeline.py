"""A run as a timeline: the facts the drawings are made of, from the run's record alone.

One row per step, in start order (stage, then name), clean-up and ``finally`` steps set
apart after the others. Each attempt is drawn as its segments: the wait in ``created``
and the running time from the API's ``start_at``/``end_at`` when they are believed
(:mod:`runbook.apitimes`), then the lag until runbook saw the end; otherwise one
segment from runbook's trigger to the end it saw. A retry's wait is a segment of its
own. Each segment says which clock it came from. Over the rows: each invocation's span
(a resume's gap between them), the deadline, the forecast made at the start, and the
critical path as the run happened — the forecast's rule on the real times.

:mod:`runbook.render.timeline_svg` draws it as SVG and HTML,
:mod:`runbook.render.timeline_mermaid` as a Mermaid ``gantt``.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace
from typing import Literal
from urllib.parse import urlsplit

from runbook.apitimes import believed_span
from runbook.conditions import is_cleanup
from runbook.events import ForecastMade, RunRecord, StepRecord
from runbook.forecast import critical_path

__all__ = ["Row", "Segment", "Timeline", "build", "workflow_link"]

Kind = Literal["created", "running", "seen", "retry wait"]
Clock = Literal["api", "runbook"]
Group = Literal["step", "clean-up", "finally"]
SLOT_WAIT = 1.0
"""A step whose first trigger left this long after its last upstream ended waited for
a slot: the critical path goes through the step whose end freed it."""


@dataclass(frozen=True, slots=True)
class Segment:
    """A stretch of one attempt (or the wait before it), epoch seconds."""

    kind: Kind
    start: float
    end: float
    clock: Clock
    attempt: int
    execution_id: int | None
    state: str
    """The attempt's last execution state (``triggering``, ``running``, ``failed``...)."""
    errors: tuple[str, ...] = ()
    open: bool = False
    """Not seen to end: drawn up to the run's end (or now, for a run still going)."""


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    workflow_id: int
    stage: int
    state: str
    reason: str | None
    ignored: bool
    group: Group
    segments: tuple[Segment, ...]
    decided: float | None
    """When a step that never started was ended (skipped, cancelled), if known."""
    expected: tuple[float, float] | None
    """The forecast's bar for it, made at the start."""
    critical: bool = False

    @property
    def attempts(self) -> int:
        return len({s.attempt for s in self.segments if s.kind != "retry wait"})


@dataclass(frozen=True, slots=True)
class Timeline:
    plan: str
    run_id: int | None
    state: str
    reason: str | None
    start: float
    end: float
    """The run's end, or now for a run still going."""
    going: bool
    rows: tuple[Row, ...]
    spans: tuple[tuple[float, float], ...]
    """Each invocation's start and end."""
    deadline_at: float | None
    late: bool
    forecast: ForecastMade | None
    critical_path: tuple[str, ...]
    link_base: str | None
    """``https://app.nexadata.com``: where a workflow's page is (None: the sandbox)."""

    @property
    def duration(self) -> float:
        return max(0.0, self.end - self.start)

    @property
    def forecast_error(self) -> float | None:
        """How much later (positive) or sooner the run ended than its p50 forecast."""
        if self.forecast is None or self.going:
            return None
        return self.end - self.forecast.p50_end


def build(
    run: RunRecord, *, now: float, finally_steps: Collection[str] = (), going: bool = False
) -> Timeline:
    """The timeline of ``run`` (``going``: it is still under way, drawn up to ``now``)."""
    end = now if going or run.ended_at is None else run.ended_at
    start = run.spans[0][0] if run.spans else (run.first_started or run.started_at)
    spans = _spans(run, end)
    ordered = sorted(
        run.steps.values(),
        key=lambda s: (_group_order(_group(s, finally_steps)), s.stage, s.name),
    )
    rows = [_row(step, finally_steps, end, run.forecast) for step in ordered]
    path = _critical(ordered, rows)
    rows = [replace(row, critical=row.name in path) for row in rows]
    latest = max([end, *(s.end for row in rows for s in row.segments)])
    return Timeline(
        plan=run.plan,
        run_id=run.run_id,
        state="running" if going else run.state,
        reason=run.reason,
        start=start,
        end=latest,
        going=going,
        rows=tuple(rows),
        spans=spans,
        deadline_at=start + run.deadline if run.deadline is not None else None,
        late=run.late,
        forecast=run.forecast,
        critical_path=tuple(path),
        link_base=workflow_link(run.api_url),
    )


def workflow_link(api_url: str | None) -> str | None:
    """The Nexadata app's address for an API base URL: its scheme and host, without the
    ``/api/v1`` path; None for a loopback API (the sandbox) or none at all."""
    if not api_url:
        return None
    try:
        parts = urlsplit(api_url)
        host = parts.hostname or ""
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not host:
        return None
    if host in ("localhost", "::1") or host.startswith("127."):
        return None
    return f"{parts.scheme}://{parts.netloc}"


def _group(step: StepRecord, finally_steps: Collection[str]) -> Group:
    if step.name in finally_steps:
        return "finally"
    return "clean-up" if is_cleanup(step.run_if) else "step"


def _group_order(group: Group) -> int:
    return ("step", "clean-up", "finally").index(group)


def _spans(run: RunRecord, end: float) -> tuple[tuple[float, float], ...]:
    """Each invocation's (start, end). An invocation whose process died has no end: it
    ended, for the drawing, with the last thing it recorded before the next one."""
    recorded = sorted(
        t
        for step in run.steps.values()
        for attempt in step.attempts
        for t in (attempt.triggered_at, attempt.ended_at)
        if t is not None
    )
    spans: list[tuple[float, float]] = []
    listed = run.spans or [(run.started_at, run.ended_at)]
    for index, (begun, ended) in enumerate(listed):
        upto = listed[index + 1][0] if index + 1 < len(listed) else end
        if ended is None:
            ended = max([begun, *(t for t in recorded if begun <= t <= upto)])
        spans.append((begun, min(ended, upto)))
    return tuple(spans)


def _row(
    step: StepRecord, finally_steps: Collection[str], end: float, forecast: ForecastMade | None
) -> Row:
    segments: list[Segment] = []
    previous_end: float | None = None
    for attempt in step.attempts:
        number, ident, state = attempt.number, attempt.execution_id, attempt.state
        trigger = attempt.triggered_at
        if previous_end is not None and trigger > previous_end:
            segments.append(
                Segment("retry wait", previous_end, trigger, "runbook", number, None, "waiting")
            )
        seen_end = attempt.ended_at
        finished = seen_end if seen_end is not None else max(end, trigger)
        errors = attempt.errors
        believed = believed_span(attempt.start_at, attempt.end_at, trigger, seen_end)
        if believed is not None and seen_end is not None:
            began, ended = max(believed[0], trigger), min(believed[1], seen_end)
            began = min(began, ended)
            if began > trigger:
                segments.append(Segment("created", trigger, began, "api", number, ident, state))
            segments.append(Segment("running", began, ended, "api", number, ident, state, errors))
            if seen_end > ended:
                segments.append(Segment("seen", ended, seen_end, "runbook", number, ident, state))
        else:
            segments.append(
                Segment(
                    "running",
                    trigger,
                    finished,
                    "runbook",
                    number,
                    ident,
                    state,
                    errors,
                    open=seen_end is None,
                )
            )
        previous_end = finished
    return Row(
        name=step.name,
        workflow_id=step.workflow_id,
        stage=step.stage,
        state=step.state,
        reason=step.reason,
        ignored=step.ignored,
        group=_group(step, finally_steps),
        segments=tuple(segments),
        decided=step.ended_at if not step.attempts else None,
        expected=forecast.steps.get(step.name) if forecast is not None else None,
    )


def _critical(ordered: list[StepRecord], rows: list[Row]) -> list[str]:
    """The chain of steps that ended last, as the run happened: back from the step that
    ended last, through the upstream that ended last — or, for a step that waited for
    a slot, through the step whose end freed it."""
    ends = {row.name: row.segments[-1].end for row in rows if row.segments}
    starts = {row.name: row.segments[0].start for row in rows if row.segments}
    via: dict[str, str] = {}
    for step in ordered:
        if step.name not in starts:
            continue
        began = starts[step.name]
        ready = max((ends[up] for up in step.upstreams if up in ends), default=None)
        if ready is not None and began - ready <= SLOT_WAIT:
            continue
        freed = [n for n, t in ends.items() if n != step.name and t <= began]
        if freed and (ready is not None or began - min(starts.values()) > SLOT_WAIT):
            via[step.name] = max(freed, key=lambda n: ends[n])
    return critical_path(ordered, ends, via)
