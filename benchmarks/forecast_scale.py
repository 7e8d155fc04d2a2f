"""The forecast at scale, and how close it comes to the real thing.

1. Speed: a 500-step plan (25 stages of 20, each step depending on two of the stage
   before, max_parallel 16) over a journal of 30 runs of it, then the whole
   ``runbook plan --forecast`` command, as a user types it, timed (median of 5).
   Target: at most 1 s. Then the forecast a run makes of itself while it runs, half
   its steps done, timed in-process: the run's own loop waits for it.
2. Accuracy: each example plan run against the built-in sandbox with fixed durations
   (a scenario per plan), ``--repeat`` times; before each run after the first, its
   p50 forecast from the journal of the runs before it; the error against that run's
   real duration. Target: within 10 %.

    python benchmarks/forecast_scale.py [--repeat 3] [--skip-accuracy] [--steps 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STEPS, WIDTH, RUNS = 500, 20, 30


def runbook(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runbook", *argv],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
    )


def big_plan(path: Path, steps: int = STEPS) -> None:
    rng = random.Random(5)
    lines = ["version: 1", "name: big", "max_parallel: 16", "workflows:"]
    for index in range(steps):
        stage = index // WIDTH
        ups = sorted(rng.sample(range((stage - 1) * WIDTH, stage * WIDTH), 2)) if stage else []
        deps = f", depends_on: [{', '.join(f's{u}' for u in ups)}]" if ups else ""
        lines.append(f"  s{index}: {{workflow_id: {1000 + index}{deps}}}")
    path.write_text("\n".join(lines) + "\n")


def big_journal(state: Path, steps: int = STEPS) -> None:
    """30 runs of the big plan, written through the journal's own store."""
    sys.path.insert(0, str(ROOT))
    from runbook.events import RunRecord, StepRecord
    from runbook.journal import Store

    rng = random.Random(7)
    store = Store(state)
    base = 1_790_000_000.0
    for run_number in range(RUNS):
        records = {f"s{i}": StepRecord(f"s{i}", 1000 + i, i // WIDTH + 1) for i in range(steps)}
        run = RunRecord(plan="big", run_id=None, max_parallel=16, steps=records)
        started = base + run_number * 86_400
        run_id = store.create_run(
            run, plan_path="big.yaml", plan_sha256="x", options={}, started_at=started
        )
        with store.write() as db:
            for i in range(steps):
                triggered = started + i
                took = rng.uniform(30, 300)
                record = {
                    "id": run_number * steps + i + 1,
                    "state": "succeeded",
                    "start_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(triggered + 2)),
                    "end_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(triggered + took)),
                }
                db.execute(
                    "INSERT INTO attempts (run_id, step, number, phase, execution_id, state, "
                    "record, triggered_at, ended_at) VALUES (?,?,1,'terminal',?,?,?,?,?)",
                    (run_id, f"s{i}", record["id"], "succeeded", json.dumps(record),
                     triggered, triggered + took),
                )  # fmt: skip
            db.execute(
                "UPDATE runs SET state = 'succeeded', ended_at = ? WHERE id = ?",
                (started + 3600, run_id),
            )
    store.close()


def speed(tmp: Path, steps: int) -> None:
    plan, state = tmp / "big.yaml", tmp / "state"
    big_plan(plan, steps)
    big_journal(state, steps)
    times = []
    for _ in range(5):
        started = time.perf_counter()
        done = runbook("plan", str(plan), "--forecast", "--state-dir", str(state))
        times.append(time.perf_counter() - started)
        assert done.returncode == 0, done.stderr
    line = next(line for line in done.stdout.splitlines() if line.startswith("Forecast:"))
    median = statistics.median(times)
    target = 1.0 if steps <= 500 else 3.0
    print(f"speed: {steps} steps, {RUNS} runs in the journal: plan --forecast {median:.3f} s "
          f"(median of 5; min {min(times):.3f} s); target <= {target:g} s: "
          f"{'ok' if median <= target else 'MISSED'}")  # fmt: skip
    print(f"  {line[:120]}")
    under_way(plan, state)


def under_way(plan_path: Path, state: Path) -> None:
    """The forecast a run makes of itself as it goes (runbook.eta, in the run's own
    process), half its steps done and 16 running: in-process, median of 5."""
    sys.path.insert(0, str(ROOT))
    from runbook.forecast import forecast
    from runbook.journal import Store
    from runbook.plan import load_plan

    plan = load_plan(plan_path)
    store = Store(state)
    history = store.workflow_history(step.workflow_id for step in plan.steps.values())
    store.close()
    names = list(plan.steps)
    half = len(names) // 2
    done, running = names[:half], {name: 10.0 for name in names[half : half + 16]}
    times = []
    for _ in range(5):
        started = time.perf_counter()
        made = forecast(plan, history, done=done, running=running)
        times.append(time.perf_counter() - started)
    median = statistics.median(times)
    print(f"  under way, half the steps done and 16 running: forecast() {median:.3f} s in "
          f"the run's process (median of 5); {made.samples} simulated runs")  # fmt: skip


SCENARIO = "seed: 1\ndefault: {queue: 200ms, duration: 1s}\n"


def accuracy(tmp: Path, repeat: int) -> None:
    errors = []
    scenario = tmp / "fixed.yaml"
    scenario.write_text(SCENARIO)
    for example in ("minimal.yaml", "nightly.yaml", "cleanup.yaml"):
        state = tmp / f"state-{example}"
        plan = ROOT / "examples" / example
        for number in range(repeat):
            predicted = None
            if number:
                done = runbook("plan", str(plan), "--forecast", "--format", "json",
                               "--state-dir", str(state))  # fmt: skip
                predicted = json.loads(done.stdout)["forecast"]["p50_s"]
            done = runbook("apply", str(plan), "--sandbox", "--scenario", str(scenario),
                           "--state-dir", str(state), "--report", str(tmp / "r.json"))  # fmt: skip
            report = json.loads((tmp / "r.json").read_text())
            history = json.loads(runbook("history", "--state-dir", str(state), "--format",
                                         "json", "--limit", "1").stdout)  # fmt: skip
            real = history[0]["duration"]
            if predicted is not None:
                error = (predicted - real) / real
                errors.append(abs(error))
                print(f"  {example:<14} run {number + 1}: p50 forecast {predicted:6.2f} s, "
                      f"real {real:6.2f} s ({report['state']}), error {error:+.1%}")  # fmt: skip
    worst = max(errors)
    print(f"accuracy: worst p50 error {worst:.1%} over {len(errors)} forecasts; target <= 10 %: "
          f"{'ok' if worst <= 0.10 else 'MISSED'}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--steps", type=int, default=STEPS, help="the big plan's steps")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        tmp = Path(directory)
        speed(tmp, options.steps)
        if not options.skip_accuracy:
            accuracy(tmp, options.repeat)


if __name__ == "__main__":
    main()
