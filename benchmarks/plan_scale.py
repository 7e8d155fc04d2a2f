"""How plan loading scales: load + validate + order vs a bare YAML parse.

Generates seeded random DAG plans (about two upstreams a step) of 1,000, 10,000 and
50,000 steps and prints, per size, the median time of ``load_plan`` + ``Dag`` +
``stages`` in-process, the median of a bare ``yaml.load(..., Loader=CSafeLoader)`` of
the same file, and their ratio; then the 50k/10k growth and ``runbook --version``'s
wall time. Targets: 10k <= 1.0 s and <= 3x the bare parse; 50k <= 6x 10k;
``runbook --version`` <= 0.25 s.

    python benchmarks/plan_scale.py [--repeat 5] [--sizes 1000,10000,50000]
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from runbook.plan import load_plan
from runbook.process import collector_paused


def generate(steps: int, seed: int = 1) -> str:
    """A plan of ``steps`` steps; each after the first two waits for two earlier ones."""
    rng = random.Random(seed)
    lines = [
        "# yaml-language-server: $schema=../schemas/plan.schema.json",
        "version: 1",
        f"name: scale-{steps}",
        "max_parallel: 16",
        "defaults:",
        "  retries: 1",
        "  timeout: 2h",
        "workflows:",
    ]
    for index in range(steps):
        lines.append(f"  step_{index:05d}:")
        lines.append(f"    workflow_id: {rng.randint(1, 5000)}")
        if index >= 2:
            upstreams = sorted(rng.sample(range(max(0, index - 500), index), 2))
            names = ", ".join(f"step_{u:05d}" for u in upstreams)
            lines.append(f"    depends_on: [{names}]")
    return "\n".join(lines) + "\n"


def median_time(action: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def load_and_order(path: Path) -> None:
    with collector_paused():  # as every command loads a plan
        plan = load_plan(path)
    plan.dag.stages()


def bare_parse(path: Path) -> None:
    yaml.load(path.read_text(), Loader=yaml.CSafeLoader)


def version_wall(repeat: int) -> float:
    command = [sys.executable, "-m", "runbook", "--version"]
    return median_time(lambda: subprocess.run(command, check=True, capture_output=True), repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--sizes", default="1000,10000,50000")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    results: dict[int, float] = {}
    print(f"{'steps':>7} {'bytes':>10} {'runbook s':>10} {'bare parse s':>13} {'ratio':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            path = Path(tmp) / f"scale-{size}.yaml"
            path.write_text(generate(size))
            ours = median_time(lambda path=path: load_and_order(path), args.repeat)
            bare = median_time(lambda path=path: bare_parse(path), args.repeat)
            results[size] = ours
            print(
                f"{size:>7} {path.stat().st_size:>10} {ours:>10.3f} {bare:>13.3f} "
                f"{ours / bare:>6.2f}"
            )
    if 10_000 in results and 50_000 in results:
        print(f"growth 50k / 10k: {results[50_000] / results[10_000]:.2f} (linear: 5.0)")
    print(f"runbook --version wall: {version_wall(args.repeat):.3f} s")


if __name__ == "__main__":
    main()
