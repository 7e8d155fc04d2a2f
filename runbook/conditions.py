"""``run_if`` as a value: one of three words, or a mapping of named upstreams to the
outcomes they must end with (plan format, "Conditions on named upstreams").

Pure and import-free (of runbook), so that every part that shows, stores or judges a
``run_if`` — the scheduling core, the Airflow operator, the journal, the renderers, the
notifications — reads it the same way (``str()`` shows either form: ``failure``,
``{snapshot: succeeded, load: failed}``). The rule that judges a mapping is here, once:
:func:`unmet` says which entry can no longer hold, :func:`held` why it held.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, get_args

__all__ = [
    "CLEAN_UP_OUTCOMES",
    "OUTCOMES",
    "Condition",
    "Keyword",
    "Outcome",
    "RunIf",
    "Seen",
    "accepts",
    "held",
    "is_cleanup",
    "loaded",
    "stored",
    "unmet",
    "written",
]

Keyword = Literal["success", "failure", "always"]
KEYWORDS: tuple[str, ...] = get_args(Keyword)
Outcome = Literal["succeeded", "failed", "skipped", "passed"]
OUTCOMES: tuple[str, ...] = get_args(Outcome)
NOTHING_FAILED = "run_if failure: no upstream failed"
NAMES_SHOWN = 3
CLEAN_UP_OUTCOMES = frozenset({"failed", "skipped"})
"""Outcomes that make a mapping a clean-up step: it also runs after a failure."""


@dataclass(frozen=True, slots=True)
class Condition:
    """A mapping ``run_if``: each named upstream with the outcomes it accepts, in the
    mapping's order; ``listed`` are the entries written as a list (kept as written)."""

    entries: tuple[tuple[str, tuple[Outcome, ...]], ...]
    listed: frozenset[str] = frozenset()

    @classmethod
    def of(cls, mapping: Mapping[str, str | list[str]]) -> Condition:
        """The condition a checked plan (or its journal row) writes as ``mapping``."""
        entries = tuple(
            (name, (value,) if isinstance(value, str) else tuple(value))
            for name, value in mapping.items()
        )
        listed = frozenset(name for name, value in mapping.items() if not isinstance(value, str))
        return cls(entries, listed)  # type: ignore[arg-type]

    @classmethod
    def parse(cls, value: Any) -> Condition | None:
        """``value`` as a condition if it is a valid one (a journal row, a hand-edited
        DAG file), else None."""
        if not isinstance(value, dict) or not value:
            return None
        for name, accepted in value.items():
            items = [accepted] if isinstance(accepted, str) else accepted
            if (
                not isinstance(name, str)
                or not isinstance(items, list)
                or not items
                or len(set(map(str, items))) != len(items)
                or not all(isinstance(item, str) and item in OUTCOMES for item in items)
            ):
                return None
        return cls.of(value)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.entries)

    @property
    def cleanup(self) -> bool:
        """It accepts an outcome other than ``succeeded`` and ``passed``: a clean-up step."""
        return any(CLEAN_UP_OUTCOMES.intersection(accepted) for _, accepted in self.entries)

    def written(self) -> dict[str, str | list[str]]:
        """The mapping as the plan writes it: a string or a list per entry."""
        return {
            name: list(accepted) if name in self.listed else accepted[0]
            for name, accepted in self.entries
        }

    def __str__(self) -> str:
        """``{snapshot: succeeded, load: [failed, skipped]}``: YAML's flow style."""
        parts = []
        for name, accepted in self.entries:
            value = f"[{', '.join(accepted)}]" if name in self.listed else accepted[0]
            parts.append(f"{name}: {value}")
        return "{" + ", ".join(parts) + "}"


RunIf = Keyword | Condition


def is_cleanup(run_if: RunIf) -> bool:
    """A clean-up, rollback or alert step: it still starts after a stop, and a resume
    judges it again when an upstream runs again."""
    return run_if.cleanup if isinstance(run_if, Condition) else run_if != "success"


def written(run_if: RunIf) -> str | dict[str, str | list[str]]:
    """``run_if`` for JSON (a report, a payload): a word, or the mapping as written."""
    return run_if.written() if isinstance(run_if, Condition) else run_if


def stored(run_if: RunIf) -> str:
    """``run_if`` as the journal keeps it: the word, or the mapping as compact JSON."""
    if isinstance(run_if, Condition):
        return json.dumps(run_if.written(), separators=(",", ":"))
    return run_if


def loaded(text: object) -> RunIf | None:
    """What :func:`stored` wrote, or None for anything else."""
    if text in KEYWORDS:
        return text  # type: ignore[return-value]
    if not isinstance(text, str) or not text.startswith("{"):
        return None
    try:
        return Condition.parse(json.loads(text))
    except (ValueError, RecursionError):
        return None


class Seen(NamedTuple):
    """How an upstream ended, as a condition reads it: its final state (``skipped``,
    ``cancelled``, ...), whether it passed, and whether it was selected at all (an
    unselected upstream counts as succeeded: already done)."""

    state: str
    passed: bool
    selected: bool = True


NOT_SELECTED = Seen("succeeded", True, selected=False)


def accepts(accepted: tuple[str, ...], seen: Seen) -> bool:
    """Whether an upstream that ended as ``seen`` has one of the ``accepted`` outcomes."""
    outcome = "skipped" if seen.state in ("skipped", "cancelled") else seen.state
    return outcome in accepted or (seen.passed and "passed" in accepted)


def unmet(condition: Condition, ended: Callable[[str], Seen | None]) -> str | None:
    """Why the condition can no longer hold — the first entry, in the mapping's order,
    whose upstream ended with an outcome it does not accept — or None. ``ended(name)``:
    how an upstream ended, None while it has not."""
    for name, accepted in condition.entries:
        seen = ended(name)
        if seen is not None and not accepts(accepted, seen):
            return f"run_if: {_ended(name, seen)}, not {' or '.join(accepted)}"
    return None


def held(condition: Condition, ended: Callable[[str], Seen | None]) -> str:
    """Why the condition holds, for the user: ``run_if: snapshot succeeded, load failed``."""
    parts = []
    for name, _ in condition.entries:
        seen = ended(name)
        parts.append(_ended(name, seen) if seen is not None else f"{name} running")
    return "run_if: " + ", ".join(parts)


def _ended(name: str, seen: Seen) -> str:
    if not seen.selected:
        return f"{name} not selected (counts as succeeded)"
    return f"{name} {seen.state}"


def shown_names(names: list[str]) -> str:
    """``a, b, c and 2 more``: the first NAMES_SHOWN names, then how many others."""
    shown = ", ".join(names[:NAMES_SHOWN])
    more = len(names) - NAMES_SHOWN
    return shown + (f" and {more} more" if more > 0 else "")
