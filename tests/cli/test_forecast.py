"""The forecast in a real apply: told when the run starts, from the journal."""

from __future__ import annotations

import json
import re
from pathlib import Path

from runbook.sandbox.scenario import Scenario


def test_apply_tells_the_forecast_and_recomputes_it_as_steps_end(cli, api, tmp_path: Path) -> None:
    api(Scenario(default={"queue": 0.0, "duration": 0.05}))
    plan = tmp_path / "p.yaml"
    plan.write_text(
        "version: 1\nname: p\ndefaults: {poll_interval: 20ms, max_poll_interval: 50ms}\n"
        "workflows:\n  a: {workflow_id: 1}\n  b: {workflow_id: 2, depends_on: a}\n"
        "  c: {workflow_id: 3, depends_on: b}\n"
    )
    quiet = cli("apply", str(plan))
    assert quiet.code == 0 and "forecast:" not in quiet.out  # no history, no estimate
    again = cli("apply", str(plan))
    assert re.search(
        r"forecast: the run should end at \d\d:\d\d:\d\dZ \(p50\), by \d\d:\d\d:\d\dZ \(p90\); "
        r"critical path: a -> b -> c\n",
        again.out,
    )
    events = [
        json.loads(line)["event"]
        for line in cli("apply", str(plan), "--log-format", "json").out.splitlines()
    ]
    # as of the start, told once the first triggers have left and been answered
    assert events.index("forecast") == events.index("attempt_triggered") + 1
