"""The timeline at scale: a 2,000-step run (4 stages of 500, a tenth retried, a
twentieth failed with an error, one in a hundred skipped), rendered as HTML, SVG and
Mermaid — size and render time — and the HTML loaded in headless Chromium.

    python benchmarks/timeline.py [--steps 2000] [--repeat 3]

Prints the figures and the ratio to the contract's bound (2 MB at 2,000 steps). The
browser figure is the wall time of one headless Chromium start that loads the page and
prints its DOM, against the same start on an empty page: the difference is the page's.
Nothing is asserted.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runbook.events import AttemptRecord, ForecastMade, RunRecord, StepRecord
from runbook.render.timeline import build
from runbook.render.timeline_file import render

LIMIT = 2 * 1024 * 1024


def synthetic_run(steps: int, seed: int = 5) -> RunRecord:
    rng = random.Random(seed)
    start = 1_796_000_000.0
    width = max(1, steps // 4)
    records: dict[str, StepRecord] = {}
    ends: dict[str, float] = {}
    for index in range(steps):
        stage, name = index // width, f"s{index // width}_{index % width:04d}"
        ups = (
            tuple(sorted(rng.sample([n for n in records if n.startswith(f"s{stage - 1}_")], 2)))
            if stage
            else ()
        )
        at = max([start, *(ends[u] for u in ups)]) + rng.uniform(0.1, 2)
        record = StepRecord(name, 100 + index, stage + 1, upstreams=ups)
        if rng.random() < 0.01:
            record.state, record.reason = "skipped", "upstream x did not succeed"
            record.ended_at = ends[name] = at
            records[name] = record
            continue
        tries = 2 if rng.random() < 0.1 else 1
        for number in range(1, tries + 1):
            queue, run = rng.uniform(0.5, 5), rng.uniform(5, 120)
            began, ended = at + queue, at + queue + run
            failed = number < tries or rng.random() < 0.05
            record.attempts.append(
                AttemptRecord(
                    number,
                    at,
                    execution_id=10_000 + index * 2 + number,
                    state="failed" if failed else "succeeded",
                    start_at=_iso(began),
                    end_at=_iso(ended),
                    errors=("Row count mismatch in orders <table>",) if failed else (),
                    ended_at=ended + rng.uniform(0, 3),
                )
            )
            at = record.attempts[-1].ended_at + 30  # type: ignore[operator]
        record.state = record.attempts[-1].state
        record.started_at, record.ended_at = (
            record.attempts[0].triggered_at,
            record.attempts[-1].ended_at,
        )
        ends[name] = record.ended_at or at
        records[name] = record
    end = max(ends.values())
    run = RunRecord(plan="scale", run_id=1, max_parallel=500, steps=records, state="failed")
    run.started_at, run.ended_at, run.spans = start, end, [(start, end)]
    run.forecast = ForecastMade(start, start + (end - start) * 0.9, end + 60, {})
    return run


def _iso(epoch: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(epoch, timezone.utc).isoformat().replace("+00:00", "Z")


def browser_seconds(page: Path, empty: Path, repeat: int) -> tuple[float, float] | None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        return None

    def once(target: Path) -> float:
        with tempfile.TemporaryDirectory() as profile:
            began = time.perf_counter()
            subprocess.run(
                [chromium, "--headless", "--no-sandbox", "--disable-gpu",
                 f"--user-data-dir={profile}", "--host-resolver-rules=MAP * ~NOTFOUND",
                 "--window-size=1280,900", "--dump-dom", target.as_uri()],
                capture_output=True, check=True, timeout=300,
            )  # fmt: skip
            return time.perf_counter() - began

    pages = statistics.median(once(page) for _ in range(repeat))
    blank = statistics.median(once(empty) for _ in range(repeat))
    return pages, blank


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    run = synthetic_run(args.steps)
    timings: dict[str, list[float]] = {"model": [], "html": [], "svg": [], "mermaid": []}
    texts: dict[str, str] = {}
    for _ in range(args.repeat):
        began = time.perf_counter()
        drawn = build(run, now=run.ended_at or 0.0)
        timings["model"].append(time.perf_counter() - began)
        for fmt in ("html", "svg", "mermaid"):
            began = time.perf_counter()
            texts[fmt] = render(drawn, fmt)  # type: ignore[arg-type]
            timings[fmt].append(time.perf_counter() - began)
    print(f"{args.steps} steps, {sum(len(s.attempts) for s in run.steps.values())} attempts")
    for fmt in ("html", "svg", "mermaid"):
        size = len(texts[fmt].encode())
        print(
            f"  {fmt:<8} {size / 1024:8.0f} KiB ({size / LIMIT:.2f} of 2 MB)  "
            f"render {statistics.median(timings[fmt]) * 1000:6.0f} ms"
        )
    print(f"  model    build {statistics.median(timings['model']) * 1000:6.0f} ms")
    with tempfile.TemporaryDirectory() as folder:
        page, empty = Path(folder) / "t.html", Path(folder) / "empty.html"
        page.write_text(texts["html"])
        empty.write_text("<!doctype html><title>empty</title>")
        seconds = browser_seconds(page, empty, args.repeat)
    if seconds is None:
        print("  browser  chromium not found: not measured")
    else:
        loaded, blank = seconds
        print(
            f"  browser  {loaded:.2f} s to load and print the DOM (an empty page: {blank:.2f} s; "
            f"the page's own: {loaded - blank:.2f} s)"
        )


if __name__ == "__main__":
    main()
