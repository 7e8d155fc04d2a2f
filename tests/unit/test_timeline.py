"""The timeline's model and drawings on records made by hand: invocations whose process
died, a forecast the journal cannot read, links, Mermaid's delimiters, and the size and
shape of a 2,000-step run's page."""

from __future__ import annotations

import re

import pytest

from runbook.events import AttemptRecord, ForecastMade, RunRecord, StepRecord
from runbook.render import timeline_html, timeline_mermaid, timeline_svg
from runbook.render.timeline import build, workflow_link

T0 = 1_796_000_000.0


def attempt(number: int, at: float, took: float, state: str = "succeeded") -> AttemptRecord:
    return AttemptRecord(number, T0 + at, execution_id=number, state=state, ended_at=T0 + at + took)


def a_run(**steps: list[AttemptRecord]) -> RunRecord:
    records = {
        name: StepRecord(name, index + 1, index + 1, state="succeeded", attempts=attempts)
        for index, (name, attempts) in enumerate(steps.items())
    }
    run = RunRecord(plan="p", run_id=3, max_parallel=4, steps=records, state="succeeded")
    run.started_at, run.ended_at = T0, T0 + 100
    return run


def test_an_invocation_whose_process_died_ends_with_the_last_thing_it_recorded() -> None:
    run = a_run(a=[attempt(1, 1, 5)], b=[attempt(1, 60, 10)])
    run.spans = [(T0, None), (T0 + 50, T0 + 100)]  # the first one's process died
    drawn = build(run, now=T0 + 100)
    assert drawn.spans == ((T0, T0 + 6), (T0 + 50, T0 + 100))
    svg = timeline_svg.svg(drawn)
    (gap,) = re.findall(r'<rect class="gap" x="([\d.]+)" y="\d+" width="([\d.]+)"', svg)
    scale = float(re.search(r'data-scale="([\d.e+-]+)"', svg).group(1))  # type: ignore[union-attr]
    assert float(gap[1]) == pytest.approx(44 * scale, abs=1)


def test_a_forecast_the_journal_cannot_read_is_none() -> None:
    made = ForecastMade(T0, T0 + 5, T0 + 9, {"a": (T0, T0 + 5)})
    assert ForecastMade.load(made.dump()) == made
    for junk in (None, [], {"at": "x"}, {"at": 1e300, "p50_end": 1, "p90_end": 2, "steps": {}}):
        assert ForecastMade.load(junk) is None
    broken = {**made.dump(), "steps": {"a": [1, "x"], "b": [T0, T0 + 1, 3], "c": [T0, T0 + 2]}}
    assert ForecastMade.load(broken).steps == {"c": (T0, T0 + 2)}  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("api_url", "link"),
    [
        ("https://app.nexadata.com/api/v1", "https://app.nexadata.com"),
        ("https://eu.nexadata.example:8443/api/v1/", "https://eu.nexadata.example:8443"),
        ("http://127.0.0.1:5000/api/v1", None),  # the sandbox
        ("http://localhost:8080/api/v1", None),
        ("ftp://x/api/v1", None),
        (None, None),
        ("https://[::1/api", None),
    ],
)
def test_steps_link_to_the_app_of_the_api_but_not_the_sandbox(api_url, link) -> None:
    assert workflow_link(api_url) == link


def test_a_step_links_to_its_workflow_when_the_api_is_real() -> None:
    run = a_run(load=[attempt(1, 0, 10)])
    run.api_url = "https://app.nexadata.com/api/v1"
    assert '<a href="https://app.nexadata.com/workflow/1">' in timeline_svg.svg(build(run, now=0))
    run.api_url = "http://127.0.0.1:9/api/v1"
    assert "<a " not in timeline_svg.svg(build(run, now=0))


def test_mermaid_delimiters_in_a_name_stay_text() -> None:
    run = a_run(a=[attempt(1, 0, 1)])
    run.plan = "nightly: #1; <b>"
    text = timeline_mermaid.mermaid(build(run, now=0))
    title = text.splitlines()[1]
    assert ":" not in title and "#" not in title and ";" not in title and "<" not in title
    assert title.startswith("  title nightly\ua789 \u266f1\u204f  b ")


def test_two_thousand_steps_collapse_by_stage_and_stay_under_2_mb() -> None:
    steps = {
        f"s{i // 500}_{i % 500:03d}": [attempt(1, (i // 500) * 100 + i % 7, 60)]
        for i in range(2000)
    }
    run = a_run(**steps)
    for index, step in enumerate(run.steps.values()):
        step.stage = index // 500 + 1
        step.attempts[0].errors = ("Row count mismatch in orders",)
    page = timeline_html.html_page(build(run, now=0))
    assert len(page.encode()) <= 2 * 1024 * 1024
    rows = re.findall(r'<g class="row" data-step="([^"]+)"', page)
    assert rows == [f"stage {n} (500 steps)" for n in (1, 2, 3, 4)]
    assert page.count("<title>s0_") == 500  # each attempt keeps its tooltip
    assert len(re.findall(r'<tr[^>]* data-step="', page)) == 2000  # the table lists all
