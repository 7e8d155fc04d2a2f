"""How long a run will take, and which chain of steps decides it.

The scheduler core (:mod:`runbook.schedule`) is driven on a virtual clock, as the
executor would drive it: at most ``max_parallel`` steps at once, ready steps started in
the executor's order (stage, then name), every step succeeding (so ``run_if: failure``
steps are skipped, ``always`` steps run, a mapping counts where it holds on successes),
and each step ending for the run when runbook's polling would see it end
(:meth:`runbook.plan.Step.noticed`). Each step's time is drawn from its workflow's
history — the wait in ``created`` plus the running time of its last executions that
succeeded, from the journal — or is its plan's ``estimate``, or 0 s (and the step is
listed as without history).

The run is simulated ``samples`` times, seeded, so the same journal gives the same
forecast: the p50 and p90 of its duration. Once more with every step at its median time
it gives the *p50 schedule*: each step's expected start and end, and the *critical
path*, the chain of steps that ends last in it — through the upstream that ended last,
or, for a step that waited for a slot, through the step whose end freed it.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from runbook.plan import Plan
from runbook.replay import Replay
from runbook.schedule import Rule, Schedule

__all__ = [
    "SAMPLES",
    "Forecast",
    "Linked",
    "StepForecast",
    "critical_path",
    "forecast",
    "percentile",
]

SAMPLES = 200
"""Simulated runs at most; fewer once the percentiles have settled (:func:`_converged`)."""
AT_LEAST, BATCH, SETTLED = 60, 20, 0.002
SEED = 20261202
Source = Literal["history", "estimate", "none"]


@dataclass(frozen=True, slots=True)
class StepForecast:
    name: str
    p50: float
    p90: float
    history: int
    """How many executions its figures rest on (0: an estimate, or nothing)."""
    source: Source
    start: float | None
    """In the p50 schedule, seconds from the run's start; None if it would not run."""
    end: float | None
    critical: bool


@dataclass(frozen=True, slots=True)
class Forecast:
    p50: float
    p90: float
    samples: int
    critical_path: tuple[str, ...]
    without_history: tuple[str, ...]
    steps: Mapping[str, StepForecast]

    @property
    def has_history(self) -> bool:
        return any(step.source != "none" for step in self.steps.values())


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0 < q <= 1) of ``values``; 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def forecast(
    plan: Plan,
    history: Mapping[int, Sequence[float]],
    *,
    steps: Iterable[str] | None = None,
    max_parallel: int | None = None,
    samples: int = SAMPLES,
    seed: int = SEED,
    done: Iterable[str] = (),
    running: Mapping[str, float] | None = None,
) -> Forecast:
    """The forecast of a run of ``steps`` (default: all) of ``plan``; ``history`` maps
    a workflow id to the times (seconds, queue plus running) of its last executions.

    For a run under way: ``done`` steps have ended, ``running`` ones have run for the
    seconds given; the forecast is then of what remains, from now."""
    start = plan.start_order(None if steps is None else set(steps))
    stage_of = start.stage
    rules = plan.rules(start)
    parallel = max_parallel or plan.max_parallel
    pools: dict[str, tuple[float, ...]] = {}
    sources: dict[str, Source] = {}
    for name in stage_of:
        step = plan.steps[name]
        times = tuple(history.get(step.workflow_id, ()))
        if times:
            sources[name] = "history"
        elif step.estimate is not None:
            times, sources[name] = (step.estimate,), "estimate"
        else:
            times, sources[name] = (0.0,), "none"
        # a step ends for the run when runbook sees it end: at the first poll after
        seen = {took: step.noticed(took) for took in set(times)}
        pools[name] = tuple(seen[took] for took in times)

    finished = tuple(name for name in done if name in stage_of)
    under_way = {name: age for name, age in (running or {}).items() if name in stage_of}
    rng = random.Random(seed)
    makespans: list[float] = []
    # the core's run, compiled: the same ends, some ten times cheaper a draw
    replay = Replay.of(rules, start.key, done=finished, under_way=under_way)
    ordered = [(pool, len(pool)) for pool in (pools[rule.name] for rule in rules)]
    draw = rng.random
    while len(makespans) < samples:
        drawn = [pool[int(draw() * size)] for pool, size in ordered]
        makespans.append(replay.makespan(drawn, parallel))
        if _converged(makespans):
            break
    medians = {name: percentile(pool, 0.5) for name, pool in pools.items()}
    _, starts, ends, via = _simulate(rules, start.key, medians, parallel, finished, under_way)
    path = critical_path(rules, ends, via)
    on_path = set(path)
    return Forecast(
        p50=percentile(makespans, 0.5),
        p90=percentile(makespans, 0.9),
        samples=len(makespans),
        critical_path=tuple(path),
        without_history=tuple(
            sorted(n for n, source in sources.items() if source == "none" and n in starts)
        ),
        steps={
            name: StepForecast(
                name=name,
                p50=medians[name],
                p90=percentile(pools[name], 0.9),
                history=len(pools[name]) if sources[name] == "history" else 0,
                source=sources[name],
                start=starts.get(name),
                end=ends.get(name),
                critical=name in on_path,
            )
            for name in start
        },
    )


def _converged(makespans: list[float]) -> bool:
    """Whether the p50 and p90 have settled: at a whole batch past :data:`AT_LEAST`
    samples, neither moved by more than :data:`SETTLED` of itself over the last batch.
    A plan of many steps settles soon (its run is a sum of many draws), a small one
    with spread-out times takes every sample. Deterministic, as the draws are seeded."""
    count = len(makespans)
    if count < AT_LEAST or count % BATCH:
        return False
    before = makespans[: count - BATCH]
    return all(
        abs(percentile(makespans, q) - percentile(before, q)) <= SETTLED * percentile(makespans, q)
        for q in (0.5, 0.9)
    )


def _simulate(
    rules: Sequence[Rule],
    order: Callable[[str], tuple[int, str]],
    durations: Mapping[str, float],
    parallel: int,
    done: Sequence[str] = (),
    under_way: Mapping[str, float] | None = None,
) -> tuple[float, dict[str, float], dict[str, float], dict[str, str]]:
    """One run on a virtual clock: its duration, each step's start and end, and for
    each step that waited for a slot, the step whose end freed it. ``done`` steps have
    ended; ``under_way`` ones have run for the seconds given, and hold their slots."""
    under_way = under_way or {}
    core = Schedule(rules, order=order, succeeded=done, running=under_way)
    core.begin()
    now, free, tick = 0.0, parallel - len(under_way), 0
    queue: list[tuple[tuple[int, str], str, float]] = []
    running: list[tuple[float, int, str]] = []
    for tick, (name, age) in enumerate(sorted(under_way.items()), start=1):
        heapq.heappush(running, (max(0.0, durations[name] - age), tick, name))
    starts: dict[str, float] = {}
    ends: dict[str, float] = {}
    via: dict[str, str] = {}
    last_freed: str | None = None
    for name in core.ready():
        heapq.heappush(queue, (order(name), name, now))
    while True:
        while free and queue:
            _, name, ready_at = heapq.heappop(queue)
            if not core.start(name):  # ended meanwhile (a resume's kept step), as in the executor
                continue
            starts[name] = now
            if now > ready_at and last_freed is not None:
                via[name] = last_freed
            free -= 1
            tick += 1
            heapq.heappush(running, (now + durations[name], tick, name))
        if not running:
            return now, starts, ends, via
        now, _, name = heapq.heappop(running)
        ends[name] = now
        free += 1
        last_freed = name
        core.finish(name, "succeeded")
        for ready in core.ready():
            heapq.heappush(queue, (order(ready), ready, now))


class Linked(Protocol):
    """A step as the critical path sees it (a core's Rule, a run's StepRecord)."""

    @property
    def name(self) -> str: ...
    @property
    def upstreams(self) -> tuple[str, ...]: ...


def critical_path(
    rules: Sequence[Linked], ends: Mapping[str, float], via: Mapping[str, str]
) -> list[str]:
    """From the step that ends last back to the run's start, upstream first: through
    the upstream that ended last, or through ``via[name]``, the step whose end freed
    the slot ``name`` waited for. ``rules`` in start order (ties go to the later)."""
    if not ends:
        return []
    upstreams = {rule.name: rule.upstreams for rule in rules}
    position = {rule.name: index for index, rule in enumerate(rules)}
    name: str | None = max(ends, key=lambda n: (ends[n], position[n]))
    path: list[str] = []
    while name is not None:
        path.append(name)
        if name in via:
            name = via[name]
            continue
        ran = [up for up in upstreams[name] if up in ends]
        name = max(ran, key=lambda n: (ends[n], position[n])) if ran else None
    return path[::-1]
