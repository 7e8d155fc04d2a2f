"""A timeline drawn as SVG: a row per step on one time axis, with what is drawn over
the rows (invocations, the forecast, the deadline). :mod:`timeline_html` wraps it in a
page.

Every text that runbook did not write — a plan's name, a step's, an API's error — is
escaped for XML and shown printable (bidi and control characters as escapes).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime, timezone
from html import escape

from runbook.durations import format_duration
from runbook.render.timeline import Row, Segment, Timeline
from runbook.render.wording import stamp
from runbook.text import printable

__all__ = ["COLLAPSE_ABOVE", "COLOURS", "drawing", "shown_state", "svg", "t"]

WIDTH = 1240
LABEL_W = 250
CHART_X = 260
CHART_W = 950
TOP = 46
ROW_H = 18
BAR_H = 12
COLLAPSE_ABOVE = 400
"""More rows than this and each stage of each group is drawn as one row."""
COLOURS = {
    "created": "#afb8c1",
    "seen": "#d0d7de",
    "retry wait": "#f6f8fa",
    "succeeded": "#2da44e",
    "failed": "#cf222e",
    "ignored": "#e16f24",
    "open": "#0969da",
    "unknown": "#bf8700",
}
TICKS: tuple[float, ...] = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800)
TICKS += (3600, 7200)
TICKS += (10800, 21600, 43200, 86400, 172800, 604800)
"""Seconds between two ticks of the time axis: the first that gives at most 10."""


def t(text: object) -> str:
    """Untrusted text as XML text: printable, then escaped (quotes too)."""
    return escape(printable(str(text)), quote=True)


def svg(timeline: Timeline) -> str:
    """The drawing alone, as an SVG document (the HTML page embeds the same)."""
    return '<?xml version="1.0" encoding="utf-8"?>\n' + drawing(timeline) + "\n"


def drawing(tl: Timeline) -> str:
    """The ``<svg>`` element."""
    rows = _layout(tl)
    height = TOP + ROW_H * len(rows) + 24
    scale = CHART_W / max(tl.duration, 1e-3)
    x = _x(tl.start, scale)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" role="img" aria-labelledby="tl-title tl-desc" '
        f'font-family="sans-serif" font-size="11" data-t0="{tl.start!r}" '
        f'data-scale="{scale!r}" data-x0="{CHART_X}">',
        f'<title id="tl-title">{t(tl.plan)}: run {tl.run_id} {tl.state}</title>',
        f'<desc id="tl-desc">{t(_description(tl))}</desc>',
        "<style>.lbl{dominant-baseline:middle}.why{fill:#57606a;font-style:italic}"
        ".crit{stroke:#d1242f;stroke-width:1.5}.exp{fill:none;stroke:#0969da;"
        "stroke-dasharray:2 2}.sep{font-weight:bold;fill:#24292f}</style>",
    ]
    out += _stage_bands(rows, height)
    out += _axis(tl, x, height)
    out += _gaps(tl, x, height)
    out += _forecast(tl, x, height)
    for index, (heading, members) in enumerate(rows):
        out += _row(tl, x, TOP + index * ROW_H, heading, members)
    out += _deadline(tl, x, height)
    out.append("</svg>")
    return "\n".join(out)


X = Callable[[float], float]
"""Where a moment is drawn, in pixels from the left."""
Laid = tuple[str | None, tuple[Row, ...]]
"""A drawn row: a heading (a collapsed stage, a group's title) and its steps."""


def _layout(tl: Timeline) -> list[Laid]:
    rows: list[Laid] = []
    collapse = len(tl.rows) > COLLAPSE_ABOVE
    group = "step"
    for row in tl.rows:
        if row.group != group:
            group = row.group
            rows.append((f"— {'clean-up steps' if group == 'clean-up' else 'finally'} —", ()))
        if collapse:
            key = f"{'' if group == 'step' else group + ', '}stage {row.stage}"
            if rows and rows[-1][0] == key:
                rows[-1] = (key, (*rows[-1][1], row))
                continue
            rows.append((key, (row,)))
        else:
            rows.append((None, (row,)))
    return rows


def _x(start: float, scale: float) -> X:
    def at(moment: float) -> float:
        return round(CHART_X + (moment - start) * scale, 2)

    return at


def _stage_bands(rows: list[Laid], height: int) -> Iterator[str]:
    stage = None
    shade = False
    for index, (_, members) in enumerate(rows):
        if members and members[0].stage != stage:
            stage, shade = members[0].stage, not shade
        if shade:
            yield (
                f'<rect x="0" y="{TOP + index * ROW_H}" width="{WIDTH}" height="{ROW_H}" '
                'fill="#f6f8fa"/>'
            )


def _axis(tl: Timeline, x: X, height: int) -> Iterator[str]:
    step = next((s for s in TICKS if tl.duration / s <= 10), TICKS[-1])
    if tl.duration > TICKS[-1] * 10:
        step = math.ceil(tl.duration / 10 / 86400) * 86400
    for count in range(int(tl.duration / step + 1e-9) + 1):
        moment = count * step
        left = x(tl.start + moment)
        yield (
            f'<line x1="{left}" y1="{TOP - 6}" x2="{left}" y2="{height - 20}" '
            'stroke="#d0d7de" stroke-width="0.5"/>'
        )
        shown = format_duration(moment) if moment else "0s"
        yield f'<text x="{left}" y="{TOP - 10}" text-anchor="middle">{shown}</text>'
    yield f'<text x="4" y="{TOP - 10}" class="sep">{t(_clock(tl.start))} UTC</text>'


def _gaps(tl: Timeline, x: X, height: int) -> Iterator[str]:
    for number, (before, after) in enumerate(zip(tl.spans, tl.spans[1:], strict=False), 1):
        left, right = x(before[1]), x(after[0])
        yield (
            f'<rect class="gap" x="{left}" y="{TOP}" width="{max(0.0, right - left)}" '
            f'height="{height - TOP - 20}" fill="#8c959f" fill-opacity="0.18">'
            f"<title>not running: between invocation {number} (ended {t(_clock(before[1]))}) "
            f"and invocation {number + 1} (started {t(_clock(after[0]))})</title></rect>"
        )


def _forecast(tl: Timeline, x: X, height: int) -> Iterator[str]:
    made = tl.forecast
    if made is None:
        return
    left, right = x(made.p50_end), x(made.p90_end)
    yield (
        f'<rect class="forecast" x="{left}" y="{TOP}" width="{max(1.0, right - left)}" '
        f'height="{height - TOP - 20}" fill="#0969da" fill-opacity="0.1"><title>forecast '
        f"at the start: p50 end {t(_clock(made.p50_end))}, p90 end "
        f"{t(_clock(made.p90_end))}</title></rect>"
    )
    yield f'<text x="{left}" y="{height - 8}" fill="#0969da">forecast p50-p90</text>'


def _deadline(tl: Timeline, x: X, height: int) -> Iterator[str]:
    if tl.deadline_at is None:
        return
    if tl.deadline_at > tl.end:  # past the run's end: said at the edge, not drawn off it
        yield (
            f'<text class="deadline" x="{CHART_X + CHART_W}" y="{height - 8}" '
            f'text-anchor="end" fill="#cf222e">deadline {t(_clock(tl.deadline_at))} '
            f"(in {format_duration(tl.deadline_at - tl.end)}) →</text>"
        )
        return
    left = x(tl.deadline_at)
    yield (
        f'<line class="deadline" x1="{left}" y1="{TOP - 4}" x2="{left}" y2="{height - 20}" '
        'stroke="#cf222e" stroke-width="1.5" stroke-dasharray="6 3"/>'
    )
    late = " — late" if tl.late else ""
    yield (
        f'<text class="deadline" x="{left + 3}" y="{height - 8}" fill="#cf222e" '
        f'font-weight="bold">deadline {t(_clock(tl.deadline_at))}{late}</text>'
    )


def _row(tl: Timeline, x: X, top: int, heading: str | None, members: tuple[Row, ...]) -> list[str]:
    middle = top + ROW_H / 2
    if not members:
        return [f'<text x="4" y="{middle}" class="lbl sep">{t(heading)}</text>']
    single = members[0] if heading is None else None
    name = single.name if single is not None else f"{heading} ({len(members)} steps)"
    label = name if len(name) <= 36 else name[:35] + "…"
    weight = ' font-weight="bold"' if single is not None and single.critical else ""
    out = [f'<g class="row" data-step="{t(name)}" data-state="{t(shown_state(single))}">']
    out.append(f'<text x="4" y="{middle}" class="lbl"{weight}><title>{t(name)}</title>{t(label)}')
    out.append("</text>")
    link = tl.link_base and single is not None
    if link:
        out.append(f'<a href="{t(tl.link_base)}/workflow/{single.workflow_id}">')  # type: ignore[union-attr]
    for row in members:
        if row.expected is not None and single is not None:
            left, right = x(row.expected[0]), x(row.expected[1])
            out.append(
                f'<rect class="exp" x="{left}" y="{top + ROW_H - 4}" '
                f'width="{max(1.0, right - left)}" '
                f'height="3"><title>expected at the start: {t(_clock(row.expected[0]))}-'
                f"{t(_clock(row.expected[1]))}</title></rect>"
            )
        if single is not None:
            out += [_bar(row, segment, x, top) for segment in row.segments]
        else:  # a collapsed stage: one bar an attempt, its whole span, one tooltip
            out += [_bar(row, whole, x, top) for whole in _attempts(row)]
        if not row.segments and single is not None:
            at = x(row.decided) if row.decided is not None else CHART_X
            why = f"{row.state}: {row.reason}" if row.reason else row.state
            # late in the run: the words end where it was decided, not past the edge
            end = at > CHART_X + CHART_W * 0.5
            anchor = f' text-anchor="end" x="{at - 2}"' if end else f' x="{at + 2}"'
            out.append(f'<text{anchor} y="{middle}" class="lbl why">{t(why)}</text>')
    if link:
        out.append("</a>")
    out.append("</g>")
    return out


def _bar(row: Row, segment: Segment, x: X, top: int) -> str:
    left, right = x(segment.start), x(segment.end)
    width = max(0.5, right - left)
    kind = segment.kind
    colour = COLOURS.get(kind) if kind != "running" else COLOURS[_outcome(row, segment)]
    inset = 3 if kind in ("seen", "retry wait") else 0
    crit = " crit" if row.critical and kind == "running" else ""
    stroke = ' stroke="#8c959f" stroke-dasharray="2 2"' if kind == "retry wait" else ""
    return (
        f'<rect class="seg {kind.replace(" ", "-")}{crit}" x="{left}" y="{top + 3 + inset}" '
        f'width="{round(width, 2)}" height="{BAR_H - 2 * inset}" fill="{colour}"{stroke} '
        f'data-attempt="{segment.attempt}" data-clock="{segment.clock}">'
        f"<title>{t(_tooltip(row, segment))}</title></rect>"
    )


def _attempts(row: Row) -> list[Segment]:
    """Each attempt of a row as one running segment, from its trigger to its seen end."""
    whole = []
    for number in sorted({s.attempt for s in row.segments if s.kind != "retry wait"}):
        parts = [s for s in row.segments if s.attempt == number and s.kind != "retry wait"]
        last = parts[-1]
        whole.append(replace(last, kind="running", start=parts[0].start, clock="runbook"))
    return whole


def _outcome(row: Row, segment: Segment) -> str:
    if segment.open or segment.state in ("created", "running"):
        return "open"
    if segment.state == "succeeded":
        return "succeeded"
    if segment.state == "failed":
        return "ignored" if row.ignored else "failed"
    return "unknown"


def _tooltip(row: Row, segment: Segment) -> str:
    ident = f", execution {segment.execution_id}" if segment.execution_id else ""
    what = {
        "created": "waiting in created",
        "running": "running",
        "seen": "until runbook saw the end",
        "retry wait": "waiting to retry",
    }[segment.kind]
    clock = "the API's clock" if segment.clock == "api" else "runbook's clock"
    parts = [
        f"{row.name} (workflow {row.workflow_id}{ident}), attempt {segment.attempt}: {what}",
        f"{_clock(segment.start)}-{_clock(segment.end)} "
        f"({format_duration(segment.end - segment.start)}, {clock})",
        f"execution {segment.state}" + (" (not seen to end)" if segment.open else ""),
    ]
    parts += [f"error: {error}" for error in segment.errors[:3]]
    if row.reason and segment.kind == "running":
        parts.append(f"step {row.state}: {row.reason}")
    return "\n".join(parts)


def shown_state(row: Row | None) -> str:
    if row is None:
        return "stage"
    return "ignored" if row.ignored else row.state


def _clock(epoch: float) -> str:
    try:
        return datetime.fromtimestamp(epoch, timezone.utc).strftime("%H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return "?"


def _description(tl: Timeline) -> str:
    path = " → ".join(tl.critical_path) or "none"
    return (
        f"{len(tl.rows)} steps from {stamp(tl.start)} over {format_duration(tl.duration)}; "
        f"critical path: {path}"
    )
