"""Adaptive polling: API requests per step against detection lag, for a few settings.

*Detection lag* is the time from an execution's end (the API's ``end_at``) to runbook
seeing it end. Two parts:

1. **The curve**, from runbook's own polling schedule (``runbook.run.attempt.poll_delay``,
   jitter included) over 2,000 executions whose running times are log-uniform between
   30 s and 2 h (seeded): requests per step (the POST plus every poll), mean and p95
   lag, for sweeps of ``poll_interval``, ``max_poll_interval`` and the growth fraction
   (``POLL_FRACTION``), each with the other two at their defaults, and for fixed
   polling. Time is simulated: no process, no sleep.
2. **The check against the real thing**: ``runbook apply`` against the sandbox (its
   own process) on 100 parallel steps running 30 s to 20 min (log-uniform), with every
   time scaled down 30 times (so 1-40 s, and ``poll_interval`` 5 s run as 167 ms), for
   ``poll_interval`` 2.5, 5 and 10 s. Lags come from the journal (each attempt's end as
   runbook recorded it against the API's ``end_at``), requests from the sandbox's
   counters; the model is run on the same running times for comparison. The schedule
   is homogeneous in time (every wait scales with the settings), so the scaled run
   measures the real curve's points.

    python benchmarks/polling_curve.py [--no-check] [--scale 30]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sandbox_process import start_sandbox, stats

import runbook.polling
from runbook.plan import BUILTIN_DEFAULTS, Step
from runbook.run.attempt import poll_delay
from runbook.text import parse_timestamp

DEFAULT_LOW = float(BUILTIN_DEFAULTS["poll_interval"])
DEFAULT_HIGH = float(BUILTIN_DEFAULTS["max_poll_interval"])
DEFAULT_FRACTION = runbook.polling.POLL_FRACTION


def durations(count: int, low: float, high: float, seed: int = 7) -> list[float]:
    rng = random.Random(seed)
    return [math.exp(rng.uniform(math.log(low), math.log(high))) for _ in range(count)]


def step(low: float, high: float) -> Step:
    return Step(
        name="s",
        workflow_id=1,
        depends_on=(),
        description=None,
        on_failure="stop",
        retries=0,
        retry_delay=0.0,
        timeout=math.inf,
        poll_interval=low,
        max_poll_interval=high,
    )


@contextmanager
def fraction(value: float) -> Iterator[None]:
    """The growth fraction, which ``poll_wait`` reads from its module at each call."""
    saved = runbook.polling.POLL_FRACTION
    runbook.polling.POLL_FRACTION = value
    try:
        yield
    finally:
        runbook.polling.POLL_FRACTION = saved


Figures = tuple[float, float, float, float]


def summary(requests: float, lags: list[float], times: list[float]) -> Figures:
    """(requests per step, mean lag, p95 lag, p95 of lag / running time)."""
    relative = sorted(lag / took for lag, took in zip(lags, times, strict=True))
    lags = sorted(lags)
    p95 = int(len(lags) * 0.95)
    return requests / len(times), statistics.fmean(lags), lags[p95], relative[p95]


def model(times: list[float], low: float, high: float) -> Figures:
    """The figures of runbook's schedule over executions running ``times``."""
    rng = random.Random(1)
    settings = step(low, high)
    requests, lags = 0, []
    for took in times:
        seen, polls = 0.0, 0
        while seen < took:
            seen += poll_delay(settings, seen, rng)
            polls += 1
        requests += 1 + polls
        lags.append(seen - took)
    return summary(requests, lags, times)


def curve() -> None:
    times = durations(2000, 30.0, 7200.0)
    print(
        f"model: 2,000 executions, running 30 s to 2 h (log-uniform, median "
        f"{statistics.median(times):.0f} s); defaults poll_interval {DEFAULT_LOW:g} s, "
        f"max_poll_interval {DEFAULT_HIGH:g} s, fraction {DEFAULT_FRACTION:g}"
    )
    sweeps: list[tuple[str, list[tuple[str, float, float, float]]]] = [
        (
            "poll_interval",
            [(f"{v:g}s", v, DEFAULT_HIGH, DEFAULT_FRACTION) for v in (1, 2, 5, 10, 20)],
        ),
        (
            "max_poll_interval",
            [(f"{v:g}s", DEFAULT_LOW, v, DEFAULT_FRACTION) for v in (15, 30, 60, 120, 300)],
        ),
        (
            "fraction",
            [(f"{v:g}", DEFAULT_LOW, DEFAULT_HIGH, v) for v in (0.025, 0.05, 0.1, 0.2, 0.4)],
        ),
        ("fixed polling", [(f"{v:g}s", v, v, DEFAULT_FRACTION) for v in (5, 15, 30, 60, 120)]),
    ]
    for title, points in sweeps:
        print(f"  {title}:")
        rows = []
        for label, low, high, grow in points:
            with fraction(grow):
                rows.append((label, *model(times, low, high)))
        for index, (label, requests, mean, p95, relative) in enumerate(rows):
            settings = points[index][1:]
            default = title != "fixed polling" and settings == (
                DEFAULT_LOW,
                DEFAULT_HIGH,
                DEFAULT_FRACTION,
            )
            mark = " (default)" if default else ""
            print(
                f"    {label:>7s}{mark:10s} {requests:7.1f} req/step   lag mean {mean:6.1f} s"
                f"   p95 {p95:6.1f} s   p95 of lag/running time {relative:6.1%}"
            )


def write_plan(tmp: Path, times: list[float], low: float, high: float) -> tuple[Path, Path]:
    lines = ["version: 1", "name: curve", f"max_parallel: {len(times)}"]
    lines.append(
        f"defaults: {{poll_interval: {low * 1000:.0f}ms, max_poll_interval: {high * 1000:.0f}ms}}"
    )
    lines.append("workflows:")
    lines += [f"  s{i:03d}: {{workflow_id: {i + 1}}}" for i in range(len(times))]
    scenario = ["default: {queue: 0}", "workflows:"]
    scenario += [f"  {i + 1}: {{duration: {t:.3f}}}" for i, t in enumerate(times)]
    plan, sc = tmp / "curve.yaml", tmp / "curve-sc.yaml"
    plan.write_text("\n".join(lines) + "\n")
    sc.write_text("\n".join(scenario) + "\n")
    return plan, sc


def measured(tmp: Path, times: list[float], low: float, high: float) -> Figures:
    plan, scenario = write_plan(tmp, times, low, high)
    sandbox, url = start_sandbox(scenario)
    state = Path(tempfile.mkdtemp(dir=tmp))
    try:
        before = stats(url)["requests_total"]
        env = {**os.environ, "NEXADATA_TOKEN": "sandbox", "RUNBOOK_STATE_DIR": str(state)}
        subprocess.run(
            [sys.executable, "-m", "runbook", "apply", str(plan), "--api-url", url, "--quiet"],
            env=env,
            check=True,
        )
        requests = stats(url)["requests_total"] - before
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=30)
    db = sqlite3.connect(state / "journal.sqlite3")
    lags = []
    for ended_at, record in db.execute("SELECT ended_at, record FROM attempts ORDER BY step"):
        end = parse_timestamp(json.loads(record)["end_at"])
        assert end is not None
        lags.append(ended_at - end.timestamp())
    db.close()
    return summary(requests, lags, times)


def check(scale: float) -> None:
    times = durations(100, 30.0 / scale, 1200.0 / scale)
    print(
        f"check: runbook apply, 100 parallel steps running {min(times):.1f}-{max(times):.1f} s "
        f"against the sandbox, every setting divided by {scale:g}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for low, high in (
            (DEFAULT_LOW / 2, DEFAULT_HIGH),
            (DEFAULT_LOW, DEFAULT_HIGH),
            (DEFAULT_LOW * 2, DEFAULT_HIGH),
        ):
            low_s, high_s = low / scale, high / scale
            got = measured(Path(tmp), times, low_s, high_s)
            want = model(times, low_s, high_s)
            print(
                f"  poll_interval {low:g}s, max {high:g}s (run at {low_s * 1000:.0f} ms / "
                f"{high_s * 1000:.0f} ms), scaled back:"
            )
            for who, (requests, mean, p95, relative) in (("measured", got), ("model", want)):
                print(
                    f"    {who:8s} {requests:5.1f} req/step   lag mean {mean * scale:5.1f} s"
                    f"   p95 {p95 * scale:5.1f} s   p95 of lag/running time {relative:6.1%}"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-check", action="store_true", help="the model's curve only")
    parser.add_argument("--scale", type=float, default=30.0)
    args = parser.parse_args()
    curve()
    if not args.no_check:
        check(args.scale)


if __name__ == "__main__":
    main()
