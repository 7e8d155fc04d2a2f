"""A run where every step succeeds, replayed on a virtual clock for many draws of the
steps' durations, without driving the scheduling core each time.

The forecast simulates such a run hundreds of times. Which steps run and which are
skipped does not depend on the durations when every step succeeds — the core decides
that once (:meth:`Replay.of`) — and when each step is decided follows from its upstreams'
ends: a step that runs is ready when every upstream has ended; a skipped one when the
first upstream that rules it out ends (``success``: one that did not pass; a mapping:
one whose outcome an entry does not accept, in :func:`runbook.conditions.accepts`'s
words), or when every upstream has ended (``failure``). So a draw is a list-scheduling
pass over integers and floats, some ten times cheaper than the core at 10,000 steps.
``tests/unit/test_replay.py`` holds it equal to the core's own run on random plans,
mappings included.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from runbook.conditions import NOT_SELECTED, Condition, Seen, accepts
from runbook.schedule import Rule, Schedule

__all__ = ["Replay"]

INFINITY = float("inf")


@dataclass(frozen=True, slots=True)
class Replay:
    """The all-succeed run of ``rules``, compiled: for each step (in start order),
    whether it starts, the steps that wait for it (indices), and for a skipped step
    which upstreams' ends decide it (``every``: all of them, else the first of ``by``).
    For a run under way, the steps ``done`` have ended and those ``under_way`` hold
    their slots."""

    names: tuple[str, ...]
    ranks: tuple[int, ...]
    """Each step's place in the order ready steps start in (the executor's), so that the
    queue of ready steps compares integers, not the order's keys."""
    runs: tuple[bool, ...]
    """Whether the step starts in the replay (one done or under way does not)."""
    by: tuple[tuple[int, ...], ...]
    every: tuple[bool, ...]
    at_start: tuple[bool, ...]
    """Decided at the start: a mapping whose unselected upstream rules it out."""
    downstream: tuple[tuple[int, ...], ...]
    waiting: tuple[int, ...]
    """How many upstreams each step waits for."""
    done: tuple[int, ...] = ()
    under_way: tuple[tuple[int, float], ...] = ()
    """(step, the seconds it has run), by name: the order the core's replay ticks them."""

    @classmethod
    def of(
        cls,
        rules: Sequence[Rule],
        order: Callable[[str], Any],
        *,
        done: Sequence[str] = (),
        under_way: Mapping[str, float] | None = None,
    ) -> Replay:
        """Ask the core once how the run ends when every step succeeds: from the
        start, or with the steps ``done`` ended and those ``under_way`` running for the
        seconds given (as the forecast's ``_simulate`` presets them)."""
        under_way = under_way or {}
        core = Schedule(rules, order=order, succeeded=done, running=under_way)
        core.begin()
        for name in sorted(under_way):
            core.finish(name, "succeeded")
        queue = list(core.ready())
        while queue:
            name = queue.pop()
            if core.start(name):
                core.finish(name, "succeeded")
            queue += core.ready()
        states = core.states()
        index = {rule.name: n for n, rule in enumerate(rules)}
        preset = {*done, *under_way}
        runs, by, every, at_start = [], [], [], []
        for rule in rules:
            ran = states[rule.name] == "succeeded"
            runs.append(ran and rule.name not in preset)
            ups, all_of, early = rule.upstreams, False, False
            killers: tuple[str, ...] = ()
            if not ran:
                run_if = rule.run_if
                if isinstance(run_if, Condition):
                    seen = {up: Seen(states[up], core.passed(up)) for up in ups}
                    picked = [
                        name
                        for name, accepted in run_if.entries
                        if not accepts(accepted, seen.get(name, NOT_SELECTED))
                    ]
                    early = any(name not in seen for name in picked)
                    killers = tuple(name for name in picked if name in seen)
                elif run_if == "failure":
                    killers, all_of = ups, True
                else:  # success: the first upstream that did not pass
                    killers = tuple(up for up in ups if not core.passed(up))
            by.append(tuple(index[up] for up in killers))
            every.append(all_of)
            at_start.append(early)
        downstream: list[list[int]] = [[] for _ in rules]
        for n, rule in enumerate(rules):
            for up in rule.upstreams:
                downstream[index[up]].append(n)
        return cls(
            downstream=tuple(map(tuple, downstream)),
            waiting=tuple(len(rule.upstreams) for rule in rules),
            names=tuple(rule.name for rule in rules),
            ranks=_ranks([order(rule.name) for rule in rules]),
            runs=tuple(runs),
            by=tuple(by),
            every=tuple(every),
            at_start=tuple(at_start),
            done=tuple(sorted({index[name] for name in done})),
            under_way=tuple((index[name], age) for name, age in sorted(under_way.items())),
        )

    def makespan(self, durations: Sequence[float], parallel: int) -> float:
        """When the run ends, ``durations[i]`` being step ``i``'s (in ``names``' order)."""
        return self._run(durations, parallel, None, None)

    def run(
        self, durations: Sequence[float], parallel: int
    ) -> tuple[float, dict[str, float], dict[str, float]]:
        """The run's duration and each step's start and end (the ones that run)."""
        starts: dict[str, float] = {}
        ends: dict[str, float] = {}
        return self._run(durations, parallel, starts, ends), starts, ends

    def _run(
        self,
        durations: Sequence[float],
        parallel: int,
        starts: dict[str, float] | None,
        ends: dict[str, float] | None,
    ) -> float:
        names, ranks, runs, downstream = self.names, self.ranks, self.runs, self.downstream
        at_rank = [0] * len(ranks)
        for n, rank in enumerate(ranks):
            at_rank[rank] = n
        final = [INFINITY] * len(names)  # -1: handed out, running or to run
        waiting = list(self.waiting)
        ready: list[int] = []  # ranks
        running: list[tuple[float, int, int]] = []
        now, free, tick = 0.0, parallel - len(self.under_way), 0
        push, pop = heapq.heappush, heapq.heappop
        for n in self.done:  # ended before now: decided, no slot
            final[n] = 0.0
        for n in self.done:
            for down in downstream[n]:
                waiting[down] -= 1
        for n, age in self.under_way:  # holding slots, ending when their time is up
            final[n] = -1.0
            tick += 1
            push(running, (max(0.0, durations[n] - age), tick, n))

        def judge(n: int, at: float) -> None:
            """An upstream of step ``n`` ended at ``at``, or ``n`` has none."""
            if final[n] != INFINITY:
                return
            if runs[n]:
                if not waiting[n]:
                    push(ready, ranks[n])
                    final[n] = -1.0
                return
            if waiting[n] and (
                self.every[n]
                or not (self.at_start[n] or any(0 <= final[k] < INFINITY for k in self.by[n]))
            ):
                return
            final[n] = at  # skipped: decided now, it holds no slot
            for down in downstream[n]:
                waiting[down] -= 1
                judge(down, at)

        for n in range(len(names)):
            judge(n, 0.0)
        while True:
            while free and ready:
                n = at_rank[pop(ready)]
                if starts is not None:
                    starts[names[n]] = now
                free -= 1
                tick += 1
                push(running, (now + durations[n], tick, n))
            if not running:
                return now
            now, _, n = pop(running)
            if ends is not None:
                ends[names[n]] = now
            free += 1
            final[n] = now
            for down in downstream[n]:
                waiting[down] -= 1
                if runs[down] and not waiting[down]:  # the common case, inline
                    push(ready, ranks[down])
                    final[down] = -1.0
                elif not runs[down]:
                    judge(down, now)

    def order_durations(self, durations: Mapping[str, float]) -> list[float]:
        return [durations[name] for name in self.names]


def _ranks(keys: Sequence[Any]) -> tuple[int, ...]:
    """Each key's place among ``keys`` in order (the keys are distinct)."""
    ranks = [0] * len(keys)
    for rank, n in enumerate(sorted(range(len(keys)), key=keys.__getitem__)):
        ranks[n] = rank
    return tuple(ranks)
