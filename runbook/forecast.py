"""How long a run will take, and which chain of steps decides it.

The scheduler core (:mod:`runbook.schedule`) is driven on a virtual clock, as the
executor would drive it: at most ``max_parallel`` steps at once, ready steps started in
the executor's order (stage, then name), every step succeeding (so ``run_if: failure``
steps are skipped, ``always`` steps run), and each step ending for the run when
runbook's polling would see it end (:meth:`runbook.plan.Step.noticed`). Each step's
time is drawn from its workflow's history — the wait in ``created`` plus the running
time of its last executions that succeeded, from the journal — or is its plan's
``estimate``, or 0 s (and the step is listed as without history).

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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from runbook.plan import Plan
from runbook.schedule import Rule, Schedule

__all__ = ["SAMPLES", "Forecast", "StepForecast", "forecast", "percentile"]

SAMPLES = 200
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
) -> Forecast:
    """The forecast of a run of ``steps`` (default: all) of ``plan``; ``history`` maps
    a workflow id to the times (seconds, queue plus running) of its last executions."""
    selected = set(plan.steps if steps is None else steps)
    stages = plan.dag.stages(selected)
    stage_of = {name: number for number, stage in enumerate(stages) for name in stage}
    rules = [
        Rule(
            name,
            plan.upstreams(name, selected),
            plan.steps[name].run_if,
            plan.steps[name].on_failure,
        )
        for stage in stages
        for name in stage
    ]
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

    def order(name: str) -> tuple[int, str]:
        return stage_of[name], name

    rng = random.Random(seed)
    makespans = []
    for _ in range(samples):
        drawn = {name: rng.choice(pool) for name, pool in pools.items()}
        makespans.append(_simulate(rules, order, drawn, parallel)[0])
    medians = {name: percentile(pool, 0.5) for name, pool in pools.items()}
    _, starts, ends, via = _simulate(rules, order, medians, parallel)
    path = _critical_path(rules, ends, via)
    on_path = set(path)
    return Forecast(
        p50=percentile(makespans, 0.5),
        p90=percentile(makespans, 0.9),
        samples=samples,
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
            for name in sorted(stage_of, key=order)
        },
    )


def _simulate(
    rules: Sequence[Rule],
    order: object,
    durations: Mapping[str, float],
    parallel: int,
) -> tuple[float, dict[str, float], dict[str, float], dict[str, str]]:
    """One run on a virtual clock: its duration, each step's start and end, and for
    each step that waited for a slot, the step whose end freed it."""
    core = Schedule(rules, order=order)  # type: ignore[arg-type]
    core.begin()
    key = order  # (stage, name)
    now, free, tick = 0.0, parallel, 0
    queue: list[tuple[object, str, float]] = []
    running: list[tuple[float, int, str]] = []
    starts: dict[str, float] = {}
    ends: dict[str, float] = {}
    via: dict[str, str] = {}
    last_freed: str | None = None
    for name in core.ready():
        heapq.heappush(queue, (key(name), name, now))  # type: ignore[operator]
    while True:
        while free and queue:
            _, name, ready_at = heapq.heappop(queue)
            core.start(name)
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
            heapq.heappush(queue, (key(ready), ready, now))  # type: ignore[operator]


def _critical_path(
    rules: Sequence[Rule], ends: Mapping[str, float], via: Mapping[str, str]
) -> list[str]:
    """From the step that ends last back to the run's start, upstream first."""
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
