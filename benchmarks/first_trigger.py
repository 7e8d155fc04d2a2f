"""How long after its start a big plan sends its first trigger, with a forecast to make
and without: ``runbook apply --sandbox --log-format json`` of a 10,000-step plan
(stages of 20, two upstreams a step, ``max_parallel: 16``), timed from the process's
spawn to the first ``attempt_triggering`` line and to the first ``forecast`` line.

    python benchmarks/first_trigger.py [--steps 10000] [--repeat 3]

Each repeat runs the plan twice, each time in a new state dir (no history): with an
``estimate`` on every step (so a forecast is made) and without. The run is stopped
(SIGINT) once the forecast has been told, or 60 s after the first trigger. Prints the
medians; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WIDTH = 20


def write_plan(path: Path, steps: int, estimates: bool) -> None:
    rng = random.Random(5)
    estimate = ", estimate: 2m" if estimates else ""
    lines = ["version: 1", "name: big", "max_parallel: 16", "workflows:"]
    for index in range(steps):
        stage = index // WIDTH
        ups = sorted(rng.sample(range((stage - 1) * WIDTH, stage * WIDTH), 2)) if stage else []
        deps = f", depends_on: [{', '.join(f's{u}' for u in ups)}]" if ups else ""
        lines.append(f"  s{index}: {{workflow_id: {1000 + index}{deps}{estimate}}}")
    path.write_text("\n".join(lines) + "\n")


def one(plan: Path, state: Path) -> tuple[float, float | None]:
    """Seconds from spawn to the first trigger, and to the first forecast (None: none)."""
    began = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "runbook", "apply", str(plan), "--sandbox", "--new-run",
         "--log-format", "json", "--state-dir", str(state)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": ""},
    )  # fmt: skip
    assert child.stdout is not None
    trigger = told = None
    for line in child.stdout:
        event = json.loads(line).get("event")
        now = time.perf_counter() - began
        if event == "attempt_triggering" and trigger is None:
            trigger = now
        if event == "forecast" and told is None:
            told = now
        if trigger is not None and (told is not None or now - trigger > 60):
            break
    child.send_signal(signal.SIGINT)
    child.communicate(timeout=120)
    assert trigger is not None
    return trigger, told


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        results: dict[bool, list[tuple[float, float | None]]] = {True: [], False: []}
        for number in range(options.repeat):
            for estimates in (True, False):  # interleaved, each in a new state dir
                plan = tmp / f"big-{estimates}.yaml"
                write_plan(plan, options.steps, estimates)
                results[estimates].append(one(plan, tmp / f"state-{estimates}-{number}"))
    for estimates, runs in results.items():
        first = statistics.median(t for t, _ in runs)
        told = [f for _, f in runs if f is not None]
        forecast = f", first forecast told at {statistics.median(told):.2f} s" if told else ""
        print(
            f"{options.steps} steps {'with' if estimates else 'without'} estimates: "
            f"first trigger {first:.2f} s after spawn (median of {len(runs)}){forecast}"
        )


if __name__ == "__main__":
    main()
