"""The plan's dependency graph: cycles, stages, closures and selection specs.

Edges run from upstream to downstream. The order a valid plan needs (its topological
generations) comes from the standard library's ``graphlib``; networkx, a tenth of a
second to import, is loaded only for what needs its algorithms: explaining a cycle and
the closures of ``+name`` / ``name+`` selections.
"""

from __future__ import annotations

import functools
import graphlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from runbook.errors import UsageError
from runbook.text import NAME_CUTOFF, did_you_mean

__all__ = [
    "Dag",
    "Selection",
    "digraph",
    "find_cycles",
    "generations",
    "parse_spec",
    "stages_or_cycles",
]


def digraph(nodes: Iterable[str], edges: Iterable[tuple[str, str]]) -> Any:
    """A networkx DiGraph of ``nodes`` with ``edges`` from upstream to downstream."""
    import networkx as nx

    g = nx.DiGraph()
    g.add_nodes_from(nodes)
    g.add_edges_from(edges)
    return g


def generations(nodes: Iterable[str], edges: Iterable[tuple[str, str]]) -> list[list[str]] | None:
    """Topological generations, names sorted in each; ``None`` if the graph has a cycle.

    Edges whose ends are not both in ``nodes`` are ignored.
    """
    nodes = set(nodes)
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for node in nodes:
        sorter.add(node)
    for upstream, downstream in edges:
        if upstream in nodes and downstream in nodes:
            sorter.add(downstream, upstream)
    try:
        sorter.prepare()
    except graphlib.CycleError:
        return None
    stages = []
    while sorter.is_active():
        stage = sorted(sorter.get_ready())
        sorter.done(*stage)
        stages.append(stage)
    return stages


def stages_or_cycles(
    nodes: Collection[str], edges: Collection[tuple[str, str]]
) -> tuple[list[list[str]], list[list[str]]]:
    """``(stages, [])`` for an acyclic graph, else ``([], cycles)`` (see :func:`find_cycles`)."""
    stages = generations(nodes, edges)
    if stages is not None:
        return stages, []
    return [], find_cycles(digraph(nodes, edges))


def find_cycles(g: Any) -> list[list[str]]:
    """One short cycle per knot of the graph ``g``, each starting at its smallest name.

    ``[a, b, c]`` means a -> b -> c -> a: ``a`` is upstream of ``b``, and ``c`` of ``a``.
    """
    import networkx as nx

    cycles = []
    for component in nx.strongly_connected_components(g):
        if len(component) < 2:
            continue
        sub = g.subgraph(component)
        start = min(component)
        best: list[str] | None = None
        for successor in sorted(sub.successors(start)):
            path = nx.shortest_path(sub, successor, start)
            if best is None or len(path) < len(best):
                best = path
        assert best is not None  # a strongly connected node has a successor inside
        cycles.append([start, *best[:-1]])
    return sorted(cycles)


@dataclass(frozen=True, slots=True)
class Spec:
    """A parsed selection spec: ``name``, ``+name``, ``name+`` or ``+name+``."""

    text: str
    name: str
    upstream: bool
    downstream: bool
    option: str = "--select"


def parse_spec(text: str, option: str = "--select") -> Spec:
    """Parse a selection spec; a malformed one is a usage error."""
    name = text.strip()
    upstream = name.startswith("+")
    downstream = name.endswith("+") and len(name) > 1
    name = name[1 if upstream else 0 : len(name) - (1 if downstream else 0)]
    if not name or "+" in name:
        raise UsageError(
            f"{option} {text!r}: expected NAME, +NAME (with its upstreams), "
            "NAME+ (with its downstreams) or +NAME+"
        )
    return Spec(text=text, name=name, upstream=upstream, downstream=downstream, option=option)


@dataclass(frozen=True, slots=True)
class Selection:
    """The steps a command acts on, and the unselected upstreams taken as done."""

    steps: frozenset[str]
    assumed_done: frozenset[str]


class Dag:
    """A plan's steps as an acyclic graph, upstream -> downstream, with its stages.

    Built by the plan's loader once the graph is known to have no cycle, and never
    changed after: ``edges`` holds the edges written in ``depends_on`` and the implicit
    ones of the ``finally`` steps.
    """

    def __init__(
        self,
        edges: Iterable[tuple[str, str]],
        stages: Sequence[Sequence[str]],
        *,
        depends_on: Mapping[str, Sequence[str]],
        finally_steps: Sequence[str] = (),
    ) -> None:
        self.edges = tuple(edges)
        self.generations = tuple(tuple(stage) for stage in stages)
        """Topological generations, names sorted in each: the order steps start in."""
        self.depends_on = depends_on
        self.finally_steps = tuple(finally_steps)
        self._successors: dict[str, list[str]] = {name: [] for name in depends_on}
        for upstream, downstream in self.edges:
            self._successors[upstream].append(downstream)

    @functools.cached_property
    def g(self) -> Any:
        """The graph as a networkx DiGraph, built on first use."""
        return digraph(self.depends_on, self.edges)

    def stages(self, steps: Iterable[str] | None = None) -> list[list[str]]:
        """Topological generations of ``steps`` (default all), names sorted in each."""
        if steps is None:
            return [list(stage) for stage in self.generations]
        steps = set(steps)
        if len(steps) == len(self.depends_on):
            return self.stages()
        stages = generations(steps, self.edges)
        assert stages is not None  # a part of an acyclic graph
        return stages

    def successors(self, name: str) -> list[str]:
        """The steps that wait for ``name`` directly."""
        return list(self._successors[name])

    def upstream_of(self, name: str) -> set[str]:
        """Every step ``name`` waits for, directly or not."""
        import networkx as nx

        return set(nx.ancestors(self.g, name))

    def downstream_of(self, name: str) -> set[str]:
        """Every step that waits for ``name``, directly or not."""
        import networkx as nx

        return set(nx.descendants(self.g, name))

    def select(self, selects: Sequence[str] = (), excludes: Sequence[str] = ()) -> Selection:
        """Apply ``--select`` and ``--exclude`` specs.

        No ``--select`` means every step; excludes are removed after. The ``finally``
        steps belong to every selection, unless an ``--exclude`` names one of them
        itself. An unknown name is a usage error.
        """
        chosen = set(self.depends_on) if not selects else set()
        for text in selects:
            chosen |= self._expand(parse_spec(text, "--select"))
        named = set()
        for text in excludes:
            spec = parse_spec(text, "--exclude")
            chosen -= self._expand(spec)
            named.add(spec.name)
        chosen |= set(self.finally_steps) - named
        # the steps written in depends_on; a finally step's implicit upstreams are only
        # the selected steps
        done = {up for name in chosen for up in self.depends_on[name]} - chosen
        return Selection(steps=frozenset(chosen), assumed_done=frozenset(done))

    def _expand(self, spec: Spec) -> set[str]:
        if spec.name not in self.depends_on:
            hint = did_you_mean(spec.name, self.depends_on, cutoff=NAME_CUTOFF)
            raise UsageError(f"{spec.option} {spec.text!r}: unknown step {spec.name!r}{hint}")
        names = {spec.name}
        if spec.upstream:
            names |= self.upstream_of(spec.name)
        if spec.downstream:
            names |= self.downstream_of(spec.name)
        return names
