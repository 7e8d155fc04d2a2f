"""The rules of a plan that JSON Schema cannot say: every name refers to a step that
exists, ``finally`` and ``depends_on`` list each name once, the graph has no cycle,
conditions name real upstreams, durations parse and poll bounds are in order; and the
warnings of a valid plan (a ``run_if: failure`` that also fires on a skip).

:class:`Semantics` collects every problem in one pass, each placed at its YAML node;
it also hands the loader the edges and stages it found, so the graph is ordered once.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from runbook import graph
from runbook.conditions import Condition, is_cleanup
from runbook.durations import DurationError, format_duration, parse_duration
from runbook.errors import Problem
from runbook.schemacheck import checker, show, where
from runbook.text import NAME_CUTOFF, did_you_mean
from runbook.yamldoc import Document, YamlPath

if TYPE_CHECKING:
    from runbook.plan import Plan

__all__ = ["BUILTIN_DEFAULTS", "DURATION_KEYS", "Semantics"]

DURATION_KEYS = ("retry_delay", "timeout", "poll_interval", "max_poll_interval", "estimate")
BUILTIN_DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {
        "on_failure": "stop",
        "retries": 0,
        "retry_delay": 30.0,
        "timeout": 6 * 3600.0,
        "poll_interval": 5.0,
        "max_poll_interval": 60.0,
    }
)


class Semantics:
    """The rules JSON Schema cannot say: names that exist, no cycles, durations."""

    def __init__(self, doc: Document, bad: set[YamlPath]) -> None:
        self.doc = doc
        self.bad = bad
        self.problems: dict[Problem, None] = {}
        data = doc.data if isinstance(doc.data, dict) else {}
        self.data: dict[Any, Any] = data
        workflows = data.get("workflows")
        self.workflows: dict[Any, Any] = workflows if isinstance(workflows, dict) else {}
        defaults = data.get("defaults")
        self.defaults: dict[Any, Any] = defaults if isinstance(defaults, dict) else {}
        self.edges: list[tuple[str, str]] = []
        self.stages: list[list[str]] = []
        self.finally_steps: dict[str, None] = {}

    def report(self, path: YamlPath, message: str) -> None:
        self.problems[self.doc.problem(path, f"{where(path, self.doc.data)}: {message}")] = None

    def check(self) -> list[Problem]:
        self._finally()
        edges = self._dependencies()
        self._cycles(edges)
        self._conditions()
        self._named()
        self._durations()
        return list(self.problems)

    def _finally(self) -> None:
        """Rule 5, first half: every name in ``finally`` exists and is listed once."""
        listed = self.data.get("finally")
        if not isinstance(listed, list):
            return
        names = [name for name in self.workflows if isinstance(name, str)]
        times = Counter(name for name in listed if isinstance(name, str))
        for index, name in enumerate(listed):
            if not isinstance(name, str) or ("finally", index) in self.bad:
                continue
            if name in self.finally_steps:
                if times[name]:  # once, at the first repeat, with the count
                    count = "twice" if times[name] == 2 else f"{times[name]} times"
                    self.report(("finally", index), f"{show(name)} is listed {count}")
                    times[name] = 0
            elif name not in self.workflows:
                hint = did_you_mean(name, names, cutoff=NAME_CUTOFF)
                self.report(("finally", index), f"unknown step {show(name)}{hint}")
            else:
                self.finally_steps[name] = None

    def _conditions(self) -> None:
        """Rule 6: a ``failure`` or ``always`` step has an upstream to judge."""
        has_others = any(
            name not in self.finally_steps for name in self.workflows if isinstance(name, str)
        )
        for name, step in self.workflows.items():
            if not isinstance(step, dict) or ("workflows", name, "run_if") in self.bad:
                continue
            last = name in self.finally_steps
            run_if = step.get("run_if", "always" if last else "success")
            if run_if not in ("failure", "always") or step.get("depends_on"):
                continue
            if last and not has_others:
                index = list(self.data["finally"]).index(name)
                self.report(
                    ("finally", index),
                    f"{show(name)} would run after every other step, but every step is in "
                    f"finally: with run_if {run_if} it needs depends_on to judge",
                )
            elif not last:
                self.report(
                    ("workflows", name, "run_if"),
                    f"run_if {run_if} needs an upstream to judge, and the step has none: "
                    "give it depends_on, or list it in finally",
                )

    def _named(self) -> None:
        """Rule 7: a mapping ``run_if`` names only the step's own upstreams (the schema
        checks the outcomes, and refuses an empty mapping or list)."""
        names = [name for name in self.workflows if isinstance(name, str)]
        # the schema's own rule for a step name, read as jsonschema reads it
        step_name = re.compile(checker("plan").schema["$defs"]["step_name"]["pattern"])
        for name, step in self.workflows.items():
            run_if = step.get("run_if") if isinstance(step, dict) else None
            if not isinstance(run_if, dict) or not isinstance(name, str):
                continue
            depends_on = [up for _, up in _upstreams(name, step.get("depends_on"))]
            if name in self.finally_steps:  # every step outside finally, implicitly
                depends_on += [other for other in names if other not in self.finally_steps]
            for key in run_if:
                if not isinstance(key, str) or not step_name.search(key) or key in depends_on:
                    continue  # a bad name is the schema's to explain
                if key == name:
                    message = "a step cannot wait for itself"
                elif key in self.workflows:
                    message = (
                        f"{show(key)} is not an upstream of {show(name)}: add it to depends_on"
                    )
                else:
                    hint = did_you_mean(key, depends_on, cutoff=NAME_CUTOFF)
                    hint = hint or did_you_mean(key, names, cutoff=NAME_CUTOFF)
                    message = f"unknown step {show(key)}{hint}"
                base = ("workflows", name, "run_if")
                place = self.doc.problem((*base, key), f"{where(base)}: {message}", key=True)
                self.problems[place] = None

    def warnings(self, plan: Plan) -> tuple[Problem, ...]:
        """A ``run_if: failure`` step with an upstream in its ``depends_on`` that can be
        skipped because a step further up failed: it would also run for a step that
        never ran (the rollback of a load that never started). The implicit upstreams
        of a ``finally`` step are left out: there, "anything failed" is the point."""
        steps = plan.steps
        skippable: dict[str, bool] = {}
        for name in plan.start_order():  # upstreams first
            run_if, ups = steps[name].run_if, plan.upstreams(name, steps)
            if is_cleanup(run_if):
                skippable[name] = False  # it never skips, or passes when it does
            elif isinstance(run_if, Condition):
                skippable[name] = any(skippable.get(up, False) for up in run_if.names)
            else:
                skippable[name] = any(
                    skippable[up] or steps[up].on_failure != "ignore" for up in ups
                )
        found = []
        for name, step in steps.items():
            traps = [up for up in step.depends_on if skippable[up]]
            if step.run_if != "failure" or not traps:
                continue
            before = {up for trap in traps for up in plan.dag.upstream_of(trap)}
            example = ", ".join(
                f"{up}: {'succeeded' if up in before else 'failed'}" for up in step.depends_on
            )
            path = ("workflows", name, "run_if")
            found.append(
                self.doc.problem(
                    path,
                    f"warning: {where(path, self.doc.data)}: run_if failure also holds when "
                    f"{' or '.join(map(show, traps))} was skipped because a step before it "
                    "failed (it never ran); to run only when a step that ran failed, name "
                    f"the outcomes, e.g. run_if: {{{example}}}",
                )
            )
        return tuple(found)

    def _dependencies(self) -> dict[tuple[str, str], YamlPath]:
        names = [name for name in self.workflows if isinstance(name, str)]
        known = set(names)
        edges: dict[tuple[str, str], YamlPath] = {}
        for name, step in self.workflows.items():
            if not isinstance(step, dict) or not isinstance(name, str):
                continue
            listed = list(_upstreams(name, step.get("depends_on")))
            times = Counter(upstream for _, upstream in listed)
            seen: set[str] = set()
            for path, upstream in listed:
                if upstream == name:
                    self.report(path, "a step cannot depend on itself")
                elif upstream in seen:
                    if times[upstream]:  # once, at the first repeat, with the count
                        count = "twice" if times[upstream] == 2 else f"{times[upstream]} times"
                        self.report(path, f"{show(upstream)} is listed {count}")
                        times[upstream] = 0
                elif upstream not in known:
                    hint = did_you_mean(upstream, names, cutoff=NAME_CUTOFF)
                    self.report(path, f"unknown step {show(upstream)}{hint}")
                else:
                    if upstream in self.finally_steps and name not in self.finally_steps:
                        self.report(
                            path,
                            f"{show(upstream)} is in finally: it runs after every other step, "
                            "so only steps in finally may depend on it",
                        )
                    edges[(upstream, name)] = path
                seen.add(upstream)
        return edges

    def _cycles(self, edges: dict[tuple[str, str], YamlPath]) -> None:
        names = [name for name in self.workflows if isinstance(name, str)]
        self.edges = list(edges)
        self.stages, cycles = graph.stages_or_cycles(names, self.edges)
        for cycle in cycles:
            # cycle[0] depends on cycle[-1]: point at that entry of its depends_on
            path = edges[(cycle[-1], cycle[0])]
            shown = " -> ".join([*cycle, cycle[0]])
            self.problems[self.doc.problem(path, f"dependency cycle: {shown}")] = None

    def _durations(self) -> None:
        parsed: dict[YamlPath, float] = {}
        if "deadline" in self.data and ("deadline",) not in self.bad:
            try:
                parse_duration(self.data["deadline"])
            except DurationError as exc:
                self.report(("deadline",), str(exc))
        for base, settings in self._settings():
            for key in DURATION_KEYS:
                path = (*base, key)
                if key in settings and path not in self.bad:
                    try:
                        parsed[path] = parse_duration(settings[key])
                    except DurationError as exc:
                        self.report(path, str(exc))
        for name, step in self.workflows.items():
            if isinstance(step, dict):
                self._poll_bounds(("workflows", name), parsed)

    def _settings(self) -> Iterator[tuple[YamlPath, dict[Any, Any]]]:
        yield ("defaults",), self.defaults
        for name, step in self.workflows.items():
            if isinstance(step, dict):
                yield ("workflows", name), step

    def _poll_bounds(self, base: YamlPath, parsed: dict[YamlPath, float]) -> None:
        def setting(key: str) -> YamlPath | None:
            for path in ((*base, key), ("defaults", key)):
                if path in parsed:
                    return path
            return None

        low, high = setting("poll_interval"), setting("max_poll_interval")
        if high is None:
            return
        low_value = parsed[low] if low else BUILTIN_DEFAULTS["poll_interval"]
        if parsed[high] < low_value:
            # point at the setting this step gives itself, the one to change
            high_text, low_text = format_duration(parsed[high]), format_duration(low_value)
            if high[0] == "defaults" and low is not None and low[0] != "defaults":
                self.report(low, f"{low_text} is more than max_poll_interval ({high_text})")
            else:
                self.report(high, f"{high_text} is less than poll_interval ({low_text})")


def _upstreams(name: str, depends_on: Any) -> Iterator[tuple[YamlPath, Any]]:
    base: YamlPath = ("workflows", name, "depends_on")
    if isinstance(depends_on, str):
        yield base, depends_on
    elif isinstance(depends_on, list):
        for index, upstream in enumerate(depends_on):
            if isinstance(upstream, str):
                yield (*base, index), upstream
