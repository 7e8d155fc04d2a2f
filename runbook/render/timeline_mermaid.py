"""A timeline as a Mermaid ``gantt`` chart, for Markdown that renders it (a GitHub job
summary): a section per stage, a task per attempt (``done`` when it succeeded, ``crit``
when it failed, ``active`` while it runs), a milestone for a step that never started.

Mermaid's gantt syntax has no escaping: ``:``, ``;`` and ``#`` end a task's text and a
line break ends the line, so names and reasons are shown with those characters replaced
and every non-printable character as an escape.
"""

from __future__ import annotations

import re

from runbook.render.timeline import Row, Timeline
from runbook.text import printable

__all__ = ["mermaid"]

_UNSAFE = re.compile(r"[:;#\n\r`<>{}\"]")


def _text(value: object) -> str:
    """Text Mermaid reads as text: printable, without its delimiters."""
    swap = {":": "\ua789", ";": "\u204f", "#": "\u266f"}  # look-alikes that are text
    return _UNSAFE.sub(lambda m: swap.get(m.group(), " "), printable(str(value)))


def _ms(epoch: float) -> int:
    return round(epoch * 1000)


def mermaid(tl: Timeline) -> str:
    lines = [
        "gantt",
        f"  title {_text(tl.plan)} run {tl.run_id} {tl.state}",
        "  dateFormat x",
        "  axisFormat %H:%M:%S",
    ]
    section = None
    for row in tl.rows:
        name = f"stage {row.stage}" if row.group == "step" else f"{row.group} stage {row.stage}"
        if name != section:
            section = name
            lines.append(f"  section {_text(name)}")
        lines += _tasks(row, tl.start)
    return "\n".join(lines) + "\n"


def _tasks(row: Row, start_of_run: float) -> list[str]:
    name = _text(row.name)
    runs = [s for s in row.segments if s.kind != "retry wait"]
    if not runs:  # a milestone where it was decided (at the run's start if unknown)
        at = _ms(row.decided if row.decided is not None else start_of_run)
        return [f"  {name} ({_text(row.state)}) : milestone, {at}, 0ms"]
    out = []
    attempts = sorted({s.attempt for s in runs})
    for number in attempts:
        parts = [s for s in runs if s.attempt == number]
        start, end = parts[0].start, parts[-1].end
        last = parts[-1]
        failed = last.state == "failed" and not row.ignored
        tag = "active" if last.open else "crit" if failed else "done"
        label = name if len(attempts) == 1 else f"{name} attempt {number}"
        if row.critical:
            label += " ★"
        out.append(f"  {label} : {tag}, {_ms(start)}, {max(_ms(end), _ms(start) + 1)}")
    return out
