"""A timeline as one self-contained HTML page: a header (plan, run, outcome, duration,
deadline, the forecast and how far off it was, the critical path), a legend, the SVG
drawing inline and the same facts as a table — no script, and nothing to fetch (its
Content-Security-Policy forbids it)."""

from __future__ import annotations

from runbook.durations import format_duration
from runbook.render.timeline import Timeline
from runbook.render.timeline_svg import COLOURS, drawing, shown_state, t
from runbook.render.wording import stamp

__all__ = ["html_page"]


def html_page(tl: Timeline) -> str:
    """The self-contained page: header, legend, drawing, table."""
    facts = [
        ("plan", tl.plan),
        ("run", str(tl.run_id)),
        ("outcome", tl.state + (f": {tl.reason}" if tl.reason else "")),
        ("started", stamp(tl.start)),
        ("duration", format_duration(tl.duration) + (" so far" if tl.going else "")),
    ]
    if len(tl.spans) > 1:
        facts.append(("invocations", str(len(tl.spans))))
    if tl.deadline_at is not None:
        facts.append(("deadline", stamp(tl.deadline_at) + (" — it was late" if tl.late else "")))
    if tl.forecast is not None:
        made = tl.forecast
        error = tl.forecast_error
        off = "" if error is None else f"; the run ended {_signed(error)} its p50"
        facts.append(
            ("forecast", f"p50 end {stamp(made.p50_end)}, p90 end {stamp(made.p90_end)}{off}")
        )
    facts.append(("critical path", " → ".join(tl.critical_path) or "none"))
    head = "".join(f"<dt>{t(k)}</dt><dd>{t(v)}</dd>" for k, v in facts)
    legend = "".join(
        f'<li><span class="sw" style="background:{COLOURS[key]}"></span>{t(text)}</li>'
        for key, text in (
            ("created", "waiting in created"),
            ("succeeded", "running, succeeded"),
            ("failed", "running, failed"),
            ("ignored", "failed under on_failure: ignore"),
            ("open", "running, not seen to end"),
            ("seen", "until runbook saw the end"),
            ("retry wait", "waiting to retry"),
        )
    )
    return "\n".join(
        [
            "<!doctype html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
            "style-src 'unsafe-inline'\">",
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{t(tl.plan)} — run {tl.run_id} — runbook timeline</title>",
            f"<style>{_CSS}</style></head><body>",
            f"<header><h1>{t(tl.plan)}</h1><dl>{head}</dl></header>",
            f'<ul class="legend">{legend}<li><span class="sw crit"></span>the critical path'
            '</li><li><span class="sw gap"></span>between invocations</li><li><span class="sw" '
            'style="background:#0969da33"></span>forecast p50-p90 end</li></ul>',
            f"<figure>{drawing(tl)}</figure>",
            _table(tl),
            "</body></html>",
        ]
    )


def _signed(seconds: float) -> str:
    return f"{format_duration(abs(seconds))} {'after' if seconds >= 0 else 'before'}"


def _table(tl: Timeline) -> str:
    lines = [
        '<table id="steps"><caption>The steps, as the drawing shows them</caption><thead><tr>'
        "<th>step</th><th>workflow</th><th>state</th><th>attempts</th><th>started</th>"
        "<th>ended</th><th>took</th><th>why</th></tr></thead><tbody>"
    ]
    for row in tl.rows:
        start = row.segments[0].start if row.segments else None
        end = row.segments[-1].end if row.segments else None
        took = format_duration(end - start) if start is not None and end is not None else ""
        critical = ' class="crit"' if row.critical else ""
        cells = [
            row.name,
            str(row.workflow_id),
            shown_state(row),
            str(row.attempts),
            stamp(start) if start is not None else "",
            stamp(end) if end is not None else "",
            took,
            row.reason or "",
        ]
        lines.append(
            f'<tr{critical} data-step="{t(row.name)}">'
            + "".join(f"<td>{t(cell)}</td>" for cell in cells)
            + "</tr>"
        )
    lines.append("</tbody></table>")
    return "\n".join(lines)


_CSS = (
    "body{font-family:sans-serif;margin:16px;color:#24292f}h1{font-size:20px;margin:0 0 6px}"
    "dl{display:grid;grid-template-columns:max-content auto;gap:2px 12px;margin:0 0 10px}"
    "dt{color:#57606a}dd{margin:0}.legend{list-style:none;padding:0;display:flex;"
    "flex-wrap:wrap;gap:4px 14px;font-size:12px}.sw{display:inline-block;width:14px;"
    "height:10px;margin-right:4px;vertical-align:middle;border:1px solid #d0d7de}"
    ".sw.crit{border:2px solid #d1242f}.sw.gap{background:#8c959f55}figure{margin:8px 0;"
    "overflow-x:auto}table{border-collapse:collapse;font-size:12px}td,th{border:1px solid "
    "#d0d7de;padding:2px 6px;text-align:left}tr.crit td:first-child{font-weight:bold}"
)
