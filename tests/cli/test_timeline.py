"""``runbook timeline`` and ``apply --timeline`` end to end: sandbox runs on real
loopback, the drawing parsed back (rows, segments, pixel positions against the
journal's times), hostile text, secrets; the sink's rewrites on an injected clock.

The browser and the Mermaid parser check the same files in tests/cli/test_timeline_tools.py.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from runbook.apitimes import believed_span
from runbook.events import RunFinished, RunRecord, RunStarted, StepFinished, StepRecord
from runbook.journal import Store
from runbook.render.timeline_file import EVERY, TimelineFile
from runbook.sandbox.scenario import Scenario
from tests.support.night import TOKEN, executions

SVG = "{http://www.w3.org/2000/svg}"
FAST = {"queue": 0.05, "duration": 0.1}
PLAN = """\
version: 1
name: tl
defaults: {poll_interval: 20ms, max_poll_interval: 50ms, retry_delay: 200ms}
finally: [release]
workflows:
  extract: {workflow_id: 1}
  flaky: {workflow_id: 2, depends_on: extract, retries: 1}
  load: {workflow_id: 3, depends_on: flaky}
  bad: {workflow_id: 4, depends_on: extract, on_failure: continue}
  after_bad: {workflow_id: 5, depends_on: bad}
  release: {workflow_id: 9}
"""
SCENARIO = Scenario(
    default=FAST,
    workflows={2: {"fail_first": 1}, 4: {"outcome": "failed", "errors": ("bad rows",)}},
)


def drawing(text: str) -> ET.Element:
    """The SVG of an HTML page (or an SVG file), parsed."""
    return ET.fromstring(re.search(r"<svg .*</svg>", text, re.S).group())  # type: ignore[union-attr]


def rows_of(svg: ET.Element) -> dict[str, ET.Element]:
    return {g.get("data-step"): g for g in svg.iter(f"{SVG}g") if g.get("class") == "row"}


def segments(row: ET.Element) -> list[ET.Element]:
    return [r for r in row.iter(f"{SVG}rect") if (r.get("class") or "").startswith("seg ")]


@pytest.fixture
def ran(cli, api, tmp_path: Path):
    """One run of PLAN with its timeline, report and journal: (html, report, run)."""
    app = api(SCENARIO)
    plan = tmp_path / "tl.yaml"
    plan.write_text(PLAN)
    page, report = tmp_path / "tl.html", tmp_path / "r.json"
    result = cli("apply", str(plan), "--timeline", str(page), "--report", str(report))
    assert result.code == 1, result.out + result.err
    assert executions(app) == {"1": 1, "2": 2, "3": 1, "4": 1, "9": 1}
    store = Store(tmp_path / "state")
    try:
        run = store.load_run(store.run_row(None))  # type: ignore[arg-type]
    finally:
        store.close()
    return page.read_text(), json.loads(report.read_text()), run


def test_a_row_per_step_in_start_order_with_finally_set_apart(ran) -> None:
    page, report, _ = ran
    svg = drawing(page)
    rows = rows_of(svg)
    assert list(rows) == ["extract", "bad", "flaky", "after_bad", "load", "release"]
    headings = [t.text for t in svg.iter(f"{SVG}text") if (t.get("class") or "") == "lbl sep"]
    assert headings == ["— finally —"]
    # a retry is two attempt segments, with the wait between them
    flaky = segments(rows["flaky"])
    running = [r for r in flaky if "running" in r.get("class")]
    assert [r.get("data-attempt") for r in running] == ["1", "2"]
    assert [r.get("fill") for r in running] == ["#cf222e", "#2da44e"]  # failed, then succeeded
    assert any("retry-wait" in r.get("class") for r in flaky)
    # a step that never started: no bar, its reason in its row
    assert segments(rows["after_bad"]) == []
    assert rows["after_bad"].get("data-state") == "skipped"
    assert "skipped: upstream bad did not succeed" in "".join(rows["after_bad"].itertext())
    # the text alternative holds what the report holds
    table = dict(
        re.findall(r'<tr[^>]* data-step="([^"]+)"><td>[^<]*</td><td>\d+</td><td>(\w+)', page)
    )
    assert table == {step["name"]: step["state"] for step in report["steps"]}


def test_bars_sit_where_the_journal_says_to_a_pixel(ran) -> None:
    page, _, run = ran
    svg = drawing(page)
    t0, scale, x0 = (float(svg.get(k)) for k in ("data-t0", "data-scale", "data-x0"))

    def x(moment: float) -> float:
        return x0 + (moment - t0) * scale

    rows = rows_of(svg)
    checked = 0
    for name, step in run.steps.items():
        bars = [r for r in segments(rows[name]) if "retry-wait" not in r.get("class")]
        for attempt in step.attempts:
            mine = [r for r in bars if r.get("data-attempt") == str(attempt.number)]
            first, last = mine[0], mine[-1]
            assert float(first.get("x")) == pytest.approx(x(attempt.triggered_at), abs=1)
            right = float(last.get("x")) + float(last.get("width"))
            assert right == pytest.approx(x(attempt.ended_at), abs=1)
            believed = believed_span(
                attempt.start_at, attempt.end_at, attempt.triggered_at, attempt.ended_at
            )
            assert believed is not None  # the sandbox's times are plausible: the API's clock
            (running,) = [r for r in mine if "running" in r.get("class")]
            assert running.get("data-clock") == "api"
            assert float(running.get("x")) == pytest.approx(x(believed[0]), abs=1)
            checked += 1
    assert checked == 6


def test_the_critical_path_is_the_chain_that_ended_last(ran) -> None:
    page, _, _ = ran
    critical = re.findall(r'<tr class="crit" data-step="([^"]+)"', page)
    assert critical == ["extract", "flaky", "load", "release"]
    assert "critical path</dt><dd>extract → flaky → load → release</dd>" in page
    rows = rows_of(drawing(page))
    assert all(
        "crit" in r.get("class") for r in segments(rows["load"]) if "running" in r.get("class")
    )
    assert not any("crit" in r.get("class") for r in segments(rows["bad"]))


def test_timeline_reads_the_journal_in_each_format(cli, ran, tmp_path: Path) -> None:
    page, _, _ = ran
    again = cli("timeline")
    assert again.code == 0
    assert rows_of(drawing(again.out)).keys() == rows_of(drawing(page)).keys()
    svg_file = tmp_path / "t.svg"
    assert cli("timeline", "1", "-o", str(svg_file)).code == 0
    assert svg_file.read_text().startswith('<?xml version="1.0" encoding="utf-8"?>\n<svg ')
    mermaid = cli("timeline", "--format", "mermaid").out
    assert mermaid.startswith("gantt\n  title tl run 1 failed\n  dateFormat x\n")
    assert "  flaky attempt 1 ★ : crit, " in mermaid and "  flaky attempt 2 ★ : done, " in mermaid
    assert "  after_bad (skipped) : milestone, " in mermaid
    missing = cli("timeline", "7")
    assert (missing.code, missing.err) == (2, "runbook: no run 7 in the journal\n")
    nowhere = tmp_path / "no" / "such" / "t.html"
    unwritable = cli("timeline", "-o", str(nowhere))
    assert unwritable.code == 2
    assert unwritable.err == f"runbook: cannot write {nowhere}: No such file or directory\n"


def test_a_resumed_run_is_drawn_over_its_invocations_with_the_gap(cli, api, tmp_path) -> None:
    app = api(Scenario(default=FAST, workflows={2: {"fail_first": 1}}))
    plan = tmp_path / "r.yaml"
    plan.write_text(
        "version: 1\nname: r\ndefaults: {poll_interval: 20ms, max_poll_interval: 50ms}\n"
        "workflows:\n  a: {workflow_id: 1}\n  b: {workflow_id: 2, depends_on: a}\n"
    )
    assert cli("apply", str(plan)).code == 1
    page = tmp_path / "r.html"
    assert cli("apply", str(plan), "--resume", "--timeline", str(page)).code == 0
    assert executions(app) == {"1": 1, "2": 2}
    svg = drawing(page.read_text())
    (gap,) = [r for r in svg.iter(f"{SVG}rect") if r.get("class") == "gap"]
    assert "between invocation 1" in gap.find(f"{SVG}title").text
    b = segments(rows_of(svg)["b"])
    assert [r.get("data-attempt") for r in b if "running" in r.get("class")] == ["1", "2"]
    assert float(gap.get("x")) <= float(b[-1].get("x"))  # the second try came after it
    assert "<dt>invocations</dt><dd>2</dd>" in page.read_text()


HOSTILE_NAME = "</svg><script>alert(1)</script>\u202egnp.exe"
HOSTILE_ERROR = '<img src=x onerror="alert(1)"> & "quotes"'


def test_hostile_text_is_escaped_and_no_secret_appears(cli, api, tmp_path, monkeypatch) -> None:
    secret = "https://hooks.example/T000/B000/s3cr3t-webhook-part"
    monkeypatch.setenv("HOOK_URL", secret)
    api(Scenario(default=FAST, workflows={1: {"outcome": "failed", "errors": (HOSTILE_ERROR,)}}))
    plan = tmp_path / "h.yaml"
    plan.write_text(
        f"version: 1\nname: {json.dumps(HOSTILE_NAME)}\n"
        "defaults: {poll_interval: 20ms, max_poll_interval: 50ms}\n"
        "notify: [{webhook_env: HOOK_URL, on: [failed]}]\n"
        "workflows:\n  a: {workflow_id: 1}\n"
    )
    outputs = []
    for suffix in ("html", "svg", "mmd"):
        path = tmp_path / f"h.{suffix}"
        cli("apply", str(plan), "--new-run", "--timeline", str(path))
        outputs.append(path.read_text())
    html, svg, mermaid = outputs
    for text in (html, svg):
        assert "<script" not in text and "<img" not in text and "\u202e" not in text
        assert "&lt;/svg&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in text
        assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt; &amp; &quot;quotes&quot;" in text
        drawing(text)  # still one well-formed drawing
    assert "\\u202e" in html  # the bidi control shown as an escape
    for text in outputs:
        assert TOKEN not in text and "s3cr3t" not in text
    assert "<" not in mermaid and "\u202e" not in mermaid


# -- the sink: rewrites while the run goes, on an injected clock ----------------------------


def test_the_file_is_rewritten_at_most_every_5_s_and_only_if_regular(tmp_path: Path) -> None:
    now = [0.0]
    path = tmp_path / "live.html"
    sink = TimelineFile(
        str(path), finally_steps=(), clock=lambda: now[0], wall=lambda: 1e9 + now[0], warn=print
    )
    run = RunRecord(plan="p", run_id=1, max_parallel=1, steps={"a": StepRecord("a", 1, 1)})
    run.started_at = 1e9
    step = run.steps["a"]
    sink(RunStarted(run, 1e9))
    assert sink.writes == 1 and "<svg" in path.read_text()
    for moment in (1.0, 4.9):
        now[0] = moment
        sink(StepFinished(step, 1e9 + moment))
    assert sink.writes == 1
    now[0] = EVERY + 0.1
    sink(StepFinished(step, 1e9 + now[0]))
    assert sink.writes == 2
    assert "so far" in path.read_text()  # drawn as a run still going
    now[0] = 100.0
    sink(RunFinished(run, 1e9 + 100))
    assert sink.writes == 2  # the end's file is written with the summary
    # a FIFO, a terminal: nothing on the way (a reader would get half a page a time)
    fifo = tmp_path / "fifo"
    import os

    os.mkfifo(fifo)
    other = TimelineFile(
        str(fifo), finally_steps=(), clock=lambda: 0.0, wall=lambda: 1e9, warn=print
    )
    other(RunStarted(run, 1e9))
    assert other.writes == 0


def test_a_timeline_that_cannot_be_written_warns_and_keeps_the_exit_code(
    cli, api, tmp_path
) -> None:
    api(Scenario(default=FAST))
    plan = tmp_path / "w.yaml"
    plan.write_text("version: 1\nworkflows:\n  a: {workflow_id: 1}\n")
    result = cli("apply", str(plan), "--timeline", str(tmp_path / "no" / "such" / "dir.html"))
    assert result.code == 0
    assert "runbook: cannot write " in result.err and "dir.html" in result.err


def test_the_forecast_made_at_the_start_is_drawn_and_kept(cli, api, tmp_path) -> None:
    api(Scenario(default=FAST))
    plan = tmp_path / "f.yaml"
    plan.write_text(
        "version: 1\nname: f\ndeadline: 1h\n"
        "defaults: {poll_interval: 20ms, max_poll_interval: 50ms}\n"
        "workflows:\n  a: {workflow_id: 1}\n  b: {workflow_id: 2, depends_on: a}\n"
    )
    assert cli("apply", str(plan)).code == 0  # history for the next run's forecast
    page = tmp_path / "f.html"
    assert cli("apply", str(plan), "--timeline", str(page)).code == 0
    for text in (page.read_text(), cli("timeline", "2").out):  # drawn, and kept
        svg = drawing(text)
        assert [r.get("class") for r in svg.iter(f"{SVG}rect")].count("forecast") == 1
        expected = [r for r in svg.iter(f"{SVG}rect") if r.get("class") == "exp"]
        assert len(expected) == 2  # each step's bar as the forecast expected it
        assert "<dt>forecast</dt><dd>p50 end " in text and "its p50</dd>" in text
        # an hour after a run of a second: said at the edge, not drawn off the chart
        (deadline,) = [x for x in svg.iter(f"{SVG}text") if x.get("class") == "deadline"]
        assert re.fullmatch(r"deadline \d\d:\d\d:\d\d \(in (1h|59m\S+)\) →", deadline.text)
