"""Times the API claims, however absurd: an execution that says it ended in year 9999, or
started after it ended, or before it was triggered, succeeds as it is — and its claim
feeds no history, forecast, ETA, metrics, report or view. Every later apply of every
plan that uses the workflow runs as if the lie had not been told."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from runbook.sandbox.app import create_app
from runbook.sandbox.scenario import Scenario
from runbook.sandbox.server import serve_in_thread
from tests.support.night import TOKEN

LIES = {
    "the end in year 9999": (None, "9999-12-31T23:59:59.999999Z"),
    "a start in 9999, an end in year 1": ("9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z"),
    "a start in year 1": ("0001-01-01T00:00:00Z", None),
    "offsets of a day": ("2026-12-03T00:00:00+23:59", "2026-12-03T00:00:00-23:59"),
    "a leap second and junk": ("2026-12-31T23:59:60Z", "1e400"),
    "a week after the trigger": ("+7d", "+7d1s"),
}


def lying(app, start_at: str | None, end_at: str | None):
    """The sandbox, but an execution that succeeded claims ``start_at``/``end_at``
    (``+7d``: that long after now, by this host's clock)."""
    from datetime import datetime, timedelta, timezone

    def claim(value: str | None, current: object) -> object:
        if value is None:
            return current
        if value.startswith("+"):
            days, _, rest = value[1:].partition("d")
            later = timedelta(days=int(days), seconds=int(rest.rstrip("s") or 0))
            return (datetime.now(timezone.utc) + later).isoformat()
        return value

    async def wrapped(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        start: dict = {}

        async def rewriting(message):
            if message["type"] == "http.response.start":
                start.update(message)
                return
            text = message.get("body", b"")
            try:
                document = json.loads(text)
            except ValueError:
                document = None
            if isinstance(document, dict) and document.get("state") == "succeeded":
                document["start_at"] = claim(start_at, document.get("start_at"))
                document["end_at"] = claim(end_at, document.get("end_at"))
                text = json.dumps(document).encode()
            headers = [(k, v) for k, v in start.get("headers", []) if k != b"content-length"]
            headers.append((b"content-length", str(len(text)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": text})

        await app(scope, receive, rewriting)

    return wrapped


def plan_file(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"version: 1\nname: {name}\ndeadline: 1h\n"
        "defaults: {poll_interval: 20ms, max_poll_interval: 50ms}\nworkflows:\n"
        "  extract: {workflow_id: 1}\n  load: {workflow_id: 2, depends_on: extract}\n"
    )
    return path


@pytest.mark.parametrize("lie", sorted(LIES))
def test_an_implausible_api_time_fails_no_later_run_and_feeds_no_forecast(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lie: str
) -> None:
    monkeypatch.setenv("NEXADATA_TOKEN", TOKEN)
    monkeypatch.setenv("RUNBOOK_STATE_DIR", str(tmp_path / "state"))
    scenario = Scenario(default={"queue": 0.0, "duration": 0.05})
    nightly, other = plan_file(tmp_path, "nightly"), plan_file(tmp_path, "other")
    files = ("--report", str(tmp_path / "r.json"), "--junit", str(tmp_path / "j.xml"))
    metrics = ("--metrics-dir", str(tmp_path))
    with serve_in_thread(lying(create_app(scenario, token=TOKEN), *LIES[lie])) as url:
        monkeypatch.setenv("NEXADATA_API_URL", url)
        first = cli("apply", str(nightly), *files, *metrics)
        assert first.code == 0, first.out + first.err
        for args in (
            ("apply", str(nightly), *files, *metrics),
            ("apply", str(other), "--log-format", "json", *files),
            ("apply", str(other)),
        ):
            done = cli(*args)
            assert done.code == 0, f"{args}: {done.out}{done.err}"
            told = "forecast: the run should end at" in done.out or '"event":"forecast"' in done.out
            assert told and "at risk" not in done.out, done.out
    forecast = cli("plan", str(nightly), "--forecast", "--format", "json")
    assert forecast.code == 0, forecast.err
    predicted = json.loads(forecast.out)["forecast"]
    # the lie is not history: what runbook saw (a fraction of a second) is
    assert predicted["p90_s"] < 60, predicted
    for view in (("status",), ("history",)):
        shown = cli(*view)
        assert shown.code == 0, shown.err
        assert not re.search(r"\b(9999|0001)-", shown.out), shown.out
    status = cli("status", "--format", "json")  # the API's strings as it sent them, no more
    assert status.code == 0 and json.loads(status.out)["state"] == "succeeded"
    import xml.etree.ElementTree as ET

    cases = ET.parse(tmp_path / "j.xml").getroot().iter("testcase")
    assert all(float(case.get("time", "0")) < 60 for case in cases)
    assert json.loads((tmp_path / "r.json").read_text())["state"] == "succeeded"
    prom = next(tmp_path.glob("*.prom")).read_text()
    durations = re.findall(r"^runbook_\w*duration_seconds\{[^}]*\} (\S+)$", prom, re.M)
    assert durations and all(float(value) < 60 for value in durations), prom
    # the timeline draws runbook's own times, and says so, on a time axis of seconds
    drawn = cli("timeline", "--format", "svg")
    assert drawn.code == 0, drawn.err
    assert set(re.findall(r'data-clock="(\w+)"', drawn.out)) == {"runbook"}
    scale = float(re.search(r'data-scale="([^"]+)"', drawn.out).group(1))  # type: ignore[union-attr]
    assert 950 / scale < 60  # the run's seconds, not the lie's years
    assert "runbook&#x27;s clock" in drawn.out
