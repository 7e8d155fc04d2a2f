"""The scheduler's rules: which steps may start, which end without starting, the run's end.

Synchronous, with no I/O, no clock and no asyncio, so that every rule of the plan format
("Execution semantics", "Failure policies", "Conditional steps", "Run outcome") lives in
one place that is tested exhaustively, and so that the same rules can replay a run on a
virtual clock. The executor is the asynchronous shell that carries the decisions out.

The model is :class:`graphlib.TopologicalSorter`'s: :meth:`Schedule.ready` hands each
step out once, when its ``run_if`` holds; the caller says when it really starts
(:meth:`Schedule.start`) and how it ended (:meth:`Schedule.finish`), and learns which
steps that ended without starting. A step's life::

    pending -> ready (handed out) -> running -> succeeded | failed
    pending | ready -> skipped | cancelled (decided here, never started)

An upstream *passes* when it succeeded, failed under ``on_failure: ignore``, or is a
clean-up step skipped with nothing to clean up. A stop ends at once every step not started
that is no clean-up step, so that the clean-up steps waiting on them can start; an
interrupt starts and decides nothing more. :mod:`runbook.conditions` holds ``run_if`` and
the rule of a mapping, which the Airflow operator shares.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from runbook._compat import assert_never
from runbook.conditions import (
    NAMES_SHOWN,
    NOT_SELECTED,
    NOTHING_FAILED,
    Condition,
    RunIf,
    Seen,
    held,
    is_cleanup,
    shown_names,
    unmet,
)

__all__ = [
    "Ended",
    "Final",
    "OnFailure",
    "Outcome",
    "Phase",
    "Rule",
    "RunIf",
    "Schedule",
    "State",
    "Update",
]

OnFailure = Literal["stop", "continue", "ignore"]
Ending = Literal["succeeded", "failed"]
"""How a started step ended."""
Final = Literal["succeeded", "failed", "skipped", "cancelled"]
State = Literal["pending", "ready", "running", "succeeded", "failed", "skipped", "cancelled"]
Phase = Literal["running", "stopping", "interrupted"]
"""``stopping``: a step failed under ``on_failure: stop``; ``interrupted``: a signal or a
fatal error: nothing new starts."""
Outcome = Literal["succeeded", "failed", "interrupted"]

FINAL_STATES: frozenset[str] = frozenset({"succeeded", "failed", "skipped", "cancelled"})


@dataclass(frozen=True, slots=True)
class Rule:
    """What the scheduler needs of a step: its upstreams (selected ones only, the
    implicit ones of a ``finally`` step included) and its two policies. A mapping
    ``run_if`` may name unselected upstreams too: they count as succeeded."""

    name: str
    upstreams: tuple[str, ...] = ()
    run_if: RunIf = "success"
    on_failure: OnFailure = "stop"


@dataclass(frozen=True, slots=True)
class Ended:
    """A step the scheduler ended without starting it, and why."""

    name: str
    state: Literal["skipped", "cancelled"]
    reason: str


@dataclass(frozen=True, slots=True)
class Update:
    """What a step's end (or a stop) decided: steps ended without starting, in the order
    they were decided, and the reason the run stops if it stops now."""

    ended: tuple[Ended, ...] = ()
    stopped: str | None = None


@dataclass(slots=True)
class _Node:
    rule: Rule
    key: Any
    downstream: list[str] = field(default_factory=list)
    state: State = "pending"
    unfinished: int = 0  # upstreams without a final state
    blocked: list[str] = field(default_factory=list)  # upstreams that failed or were skipped
    cancelled: list[str] = field(default_factory=list)  # upstreams cancelled by a stop
    ignored: bool = False
    selected: frozenset[str] = frozenset()  # a mapping's upstreams that are selected


class Schedule:
    """The state of every selected step and the rules that move it.

    ``order`` gives each step's start-order key (the executor's: stage, then name);
    ``succeeded`` are steps already done (a resume's kept steps); ``running`` are steps
    whose execution is already in flight (re-attached by a resume: never triggered again).
    Unselected upstreams must not appear in the rules: they count as passed.
    """

    def __init__(
        self,
        rules: Iterable[Rule],
        *,
        order: Callable[[str], Any] | None = None,
        succeeded: Iterable[str] = (),
        running: Iterable[str] = (),
    ) -> None:
        key = order or (lambda name: name)
        self._nodes: dict[str, _Node] = {rule.name: _Node(rule, key(rule.name)) for rule in rules}
        for node in self._nodes.values():
            node.unfinished = len(node.rule.upstreams)
            if isinstance(node.rule.run_if, Condition):
                node.selected = frozenset(node.rule.upstreams)
            for upstream in node.rule.upstreams:
                self._nodes[upstream].downstream.append(node.rule.name)
        self.phase: Phase = "running"
        self.reason: str | None = None
        """Why the run stopped or was interrupted."""
        self._heap: list[tuple[Any, str]] = []
        self._preset = (tuple(succeeded), tuple(running))

    # -- questions ------------------------------------------------------------------

    def state(self, name: str) -> State:
        return self._nodes[name].state

    def states(self) -> Mapping[str, State]:
        return {name: node.state for name, node in self._nodes.items()}

    def ignored(self, name: str) -> bool:
        """The step failed under ``on_failure: ignore``: shown failed, but it passed."""
        return self._nodes[name].ignored

    def passed(self, name: str) -> bool:
        node = self._nodes[name]
        match node.state:
            case "succeeded":
                return True
            case "failed":
                return node.ignored
            case "skipped":  # a clean-up step with nothing to clean up
                return is_cleanup(node.rule.run_if)
            case "pending" | "ready" | "running" | "cancelled":
                return False
            case _:  # pragma: no cover
                assert_never(node.state)

    def may_retry(self, name: str) -> bool:
        """Whether a failed attempt of a running step may be tried again now: not after
        an interrupt, and not for a ``success`` step once the run is stopping (clean-up
        steps keep their retries: they are what a stop still runs)."""
        match self.phase:
            case "running":
                return True
            case "stopping":
                return is_cleanup(self._nodes[name].rule.run_if)
            case "interrupted":
                return False
            case _:  # pragma: no cover
                assert_never(self.phase)

    def start_reason(self, name: str) -> str | None:
        """Why a ``failure``, ``always`` or mapping step may start, for the user; None
        for the default ``success``."""
        node = self._nodes[name]
        if isinstance(node.rule.run_if, Condition):
            return held(node.rule.run_if, self._seen_by(node))
        match node.rule.run_if:
            case "success":
                return None
            case "failure":
                return f"run_if failure: {self._not_passed(node)}"
            case "always":
                ended = self._not_passed(node) if node.blocked or node.cancelled else ""
                tail = f" ({ended})" if ended else ""
                return f"run_if always: every upstream has ended{tail}"
            case _:  # pragma: no cover
                assert_never(node.rule.run_if)

    def outcome(self) -> Outcome:
        """The run's outcome (plan format, "Run outcome"): interrupted, or failed when a
        step failed other than under ``on_failure: ignore``, else succeeded."""
        if self.phase == "interrupted":
            return "interrupted"
        for node in self._nodes.values():
            if node.state == "failed" and not node.ignored:
                return "failed"
        return "succeeded"

    @property
    def unfinished(self) -> list[str]:
        """Steps without a final state (after an interrupt: what a resume runs)."""
        return [name for name, node in self._nodes.items() if node.state not in FINAL_STATES]

    # -- moves ----------------------------------------------------------------------

    def begin(self) -> Update:
        """Apply the steps already done or running, and judge every step once: steps
        without upstreams become ready; a resume's re-judged steps may end at once.
        Called once, before anything else."""
        succeeded, running = self._preset
        ended: list[Ended] = []
        for name in running:
            self._nodes[name].state = "running"
        for name in succeeded:  # every state first: one preset step is not judged by
            self._nodes[name].state = "succeeded"  # another's end, nor counted twice
        for name in succeeded:
            self._propagate(name, ended)
        for node in self._nodes.values():
            if node.state == "pending":
                self._judge(node, ended)
        return Update(tuple(ended))

    def ready(self) -> list[str]:
        """Steps that may start now, in start order, each handed out once."""
        if self.phase == "interrupted":
            return []
        out = []
        while self._heap:
            _, name = heapq.heappop(self._heap)
            out.append(name)
        return out

    def start(self, name: str) -> bool:
        """The step is about to trigger its first attempt; False if it may not any more
        (a stop ended it meanwhile, or the run was interrupted)."""
        node = self._nodes[name]
        if node.state != "ready" or self.phase == "interrupted":
            return False
        node.state = "running"
        return True

    def finish(self, name: str, ending: Ending) -> Update:
        """A started step ended: decide what its end makes ready, skipped or cancelled,
        and stop the run if it failed under ``on_failure: stop``."""
        node = self._nodes[name]
        if node.state != "running":
            raise ValueError(f"step {name!r} is {node.state}, not running")
        node.state = ending
        stopped = None
        if ending == "failed":
            match node.rule.on_failure:
                case "ignore":
                    node.ignored = True
                case "continue":
                    pass
                case "stop":
                    if self.phase == "running":
                        stopped = f"step {name} failed (on_failure: stop)"
                case _:  # pragma: no cover
                    assert_never(node.rule.on_failure)
        ended: list[Ended] = []
        self._propagate(name, ended)
        if stopped is not None:
            ended += self.stop(stopped).ended
        return Update(tuple(ended), stopped)

    def stop(self, reason: str) -> Update:
        """No new step starts but clean-up steps: each other one not started ends now
        (skipped under an upstream that did not pass, or an entry of its mapping that
        can no longer hold; else cancelled); clean-up steps are still judged as their
        upstreams end."""
        if self.phase != "running":
            return Update()
        self.phase, self.reason = "stopping", reason
        ended: list[Ended] = []
        waiting = [
            node
            for node in self._nodes.values()
            if node.state in ("pending", "ready") and not is_cleanup(node.rule.run_if)
        ]
        waiting.sort(key=lambda node: node.key)  # upstreams first: their ends propagate
        for node in waiting:
            if node.state in ("pending", "ready"):
                self._end(node, "skipped" if self._blocked(node) else "cancelled", ended)
        return Update(tuple(ended), reason)

    def interrupt(self, reason: str) -> None:
        """Nothing new starts and nothing more is decided; unended steps stay pending."""
        if self.phase != "interrupted":
            self.phase, self.reason = "interrupted", reason
        self._heap.clear()
        for node in self._nodes.values():
            if node.state == "ready":
                node.state = "pending"

    # -- the rules ------------------------------------------------------------------

    def _judge(self, node: _Node, ended: list[Ended]) -> None:
        """Decide a pending step from its upstreams' final states, if it can be now."""
        if self.phase == "interrupted":
            return
        if isinstance(node.rule.run_if, Condition):
            if self._blocked(node):
                self._end(node, "skipped", ended)
            elif node.unfinished == 0:  # (a stop ended it already unless it is a clean-up)
                self._make_ready(node)
            return
        match node.rule.run_if:
            case "success":
                if node.blocked:
                    self._end(node, "skipped", ended)
                elif node.cancelled or self.phase == "stopping":
                    self._end(node, "cancelled", ended)
                elif node.unfinished == 0:
                    self._make_ready(node)
            case "failure":
                if node.unfinished == 0:
                    if node.blocked or node.cancelled:
                        self._make_ready(node)
                    else:
                        self._end(node, "skipped", ended)
            case "always":
                if node.unfinished == 0:
                    self._make_ready(node)
            case _:  # pragma: no cover
                assert_never(node.rule.run_if)

    def _make_ready(self, node: _Node) -> None:
        node.state = "ready"
        heapq.heappush(self._heap, (node.key, node.rule.name))

    def _end(self, node: _Node, state: Literal["skipped", "cancelled"], out: list[Ended]) -> None:
        node.state = state
        out.append(Ended(node.rule.name, state, self._reason(node, state)))
        self._propagate(node.rule.name, out)

    def _reason(self, node: _Node, state: Literal["skipped", "cancelled"]) -> str:
        if state == "cancelled":
            return f"not started: {self.reason or 'the run stopped'}"
        if isinstance(node.rule.run_if, Condition):
            return unmet(node.rule.run_if, self._seen_by(node)) or "run_if: an entry did not hold"
        if node.rule.run_if == "failure":
            return NOTHING_FAILED
        return f"upstream {shown_names(node.blocked)} did not succeed"

    def _blocked(self, node: _Node) -> bool:
        """The step's ``run_if`` can no longer hold (an upstream, or an entry, did not)."""
        if isinstance(node.rule.run_if, Condition):
            return unmet(node.rule.run_if, self._seen_by(node)) is not None
        return bool(node.blocked)

    def _seen_by(self, node: _Node) -> Callable[[str], Seen | None]:
        """How each upstream of ``node`` ended, as its condition reads it."""
        selected = node.selected

        def seen(name: str) -> Seen | None:
            if name not in selected:
                return NOT_SELECTED
            up = self._nodes[name]
            return Seen(up.state, self.passed(name)) if up.state in FINAL_STATES else None

        return seen

    def _propagate(self, name: str, out: list[Ended]) -> None:
        """``name`` has a final state: count it in each step below, and judge those."""
        node = self._nodes[name]
        passed = self.passed(name)
        for down_name in node.downstream:
            down = self._nodes[down_name]
            down.unfinished -= 1
            if not passed:
                (down.cancelled if node.state == "cancelled" else down.blocked).append(name)
            if down.state == "pending":
                self._judge(down, out)

    def _not_passed(self, node: _Node) -> str:
        """``upstream load failed, export skipped``: failures first, then skips."""
        failed = [name for name in node.blocked if self._nodes[name].state == "failed"]
        skipped = [name for name in node.blocked if self._nodes[name].state != "failed"]
        parts = []
        for upstream in [*failed, *skipped, *node.cancelled][:NAMES_SHOWN]:
            parts.append(f"{upstream} {self._nodes[upstream].state}")
        more = len(node.blocked) + len(node.cancelled) - NAMES_SHOWN
        text = "upstream " + ", ".join(parts) if parts else "no upstream failed"
        return text + (f" and {more} more" if more > 0 else "")
