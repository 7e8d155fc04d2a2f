"""``runbook apply`` at scale against the sandbox in a separate process.

Two seeded workloads:

- layered: 200 steps = 10 layers x 20; each step of layer k > 0 depends on 2 distinct
  random steps of layer k-1; run time uniform 0.5-2.0 s; 0.1 s in created; all
  succeed; max_parallel 16.
- wide: 2,000 steps = 4 layers x 500, same rule, run time 1-3 s; max_parallel 500.

Each runs with fixed 0.5 s polling (``poll_interval = max_poll_interval = 0.5s``) and
with runbook's default adaptive polling. Printed per run: makespan; two lower bounds
from an event simulation (greedy list scheduling in topological order under the same
limit, zero overhead): *ideal* (the end seen at once) and *ideal at 0.5 s polling* (the
end seen at the next 0.5 s poll); the ratios; the apply process's CPU (user + sys,
start-up included) in all and per step; HTTP requests per step; peak RSS.

    python benchmarks/apply_scale.py [--workloads layered,wide] [--polling fixed,adaptive]

``--profile DIR`` runs runbook and the durable loop once each under cProfile (fixed
0.5 s polling), writes ``DIR/<workload>-runbook.prof`` and ``-durable.prof``, and prints
where each one's time goes, by package.
"""

from __future__ import annotations

import argparse
import heapq
import math
import os
import pstats
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from sandbox_process import start_sandbox, stats

QUEUE = 0.1


@dataclass(frozen=True)
class Workload:
    name: str
    layers: int
    width: int
    low: float
    high: float
    max_parallel: int


WORKLOADS = {
    "layered": Workload("layered", 10, 20, 0.5, 2.0, 16),
    "wide": Workload("wide", 4, 500, 1.0, 3.0, 500),
}


def generate(
    workload: Workload, seed: int = 1
) -> tuple[list[tuple[str, int, list[str]]], dict[int, float]]:
    """Steps (name, workflow id, upstreams) and each workflow's run time."""
    rng = random.Random(seed)
    steps, durations, previous = [], {}, []
    for layer in range(workload.layers):
        current = []
        for index in range(workload.width):
            name = f"l{layer}_{index:03d}"
            workflow_id = len(steps) + 1
            upstreams = sorted(rng.sample(previous, 2)) if previous else []
            steps.append((name, workflow_id, upstreams))
            durations[workflow_id] = round(rng.uniform(workload.low, workload.high), 3)
            current.append(name)
        previous = current
    return steps, durations


def write_files(tmp: Path, workload: Workload, polling: str) -> tuple[Path, Path]:
    steps, durations = generate(workload)
    plan = [f"version: 1\nname: bench-{workload.name}\nmax_parallel: {workload.max_parallel}"]
    if polling == "fixed":
        plan.append("defaults: {poll_interval: 0.5s, max_poll_interval: 0.5s}")
    plan.append("workflows:")
    for name, workflow_id, upstreams in steps:
        deps = f", depends_on: [{', '.join(upstreams)}]" if upstreams else ""
        plan.append(f"  {name}: {{workflow_id: {workflow_id}{deps}}}")
    scenario = [f"default: {{queue: {QUEUE}}}", "workflows:"]
    scenario += [f"  {wid}: {{duration: {d}}}" for wid, d in durations.items()]
    plan_path, scenario_path = tmp / f"{workload.name}.yaml", tmp / f"{workload.name}-sc.yaml"
    plan_path.write_text("\n".join(plan) + "\n")
    scenario_path.write_text("\n".join(scenario) + "\n")
    return plan_path, scenario_path


def ideal(workload: Workload, poll: float | None) -> float:
    """Greedy list scheduling in topological order under the limit, zero overhead.

    With ``poll``, a step's end is seen at the first poll (every ``poll`` seconds after
    its trigger) at or after its end.
    """
    steps, durations = generate(workload)
    seen: dict[str, float] = {}
    running: list[float] = []  # ends (as seen) of the executions holding a slot
    for name, workflow_id, upstreams in steps:  # already in topological order
        start = max((seen[u] for u in upstreams), default=0.0)
        while len(running) >= workload.max_parallel:
            start = max(start, heapq.heappop(running))
        length = QUEUE + durations[workflow_id]
        if poll is not None:
            length = math.ceil(length / poll - 1e-9) * poll
        seen[name] = start + length
        heapq.heappush(running, seen[name])
    return max(seen.values())


# The same ``runbook apply``, with the journal's sink made a no-op: benchmark-only, so
# that the journal's cost is the difference between two runs of one invocation.
WITHOUT_JOURNAL = (
    "import sys, runbook.journal, runbook.cli\n"
    "runbook.journal.JournalSink.__call__ = lambda self, event: None\n"
    "sys.argv[0] = 'runbook'\n"
    "raise SystemExit(runbook.cli.main())\n"
)


HAND_LOOP = Path(__file__).with_name("hand_loop.py")
DURABLE_LOOP = Path(__file__).with_name("durable_loop.py")


def measure(
    workload: Workload,
    polling: str,
    tmp: Path,
    *,
    journal: bool = True,
    hand_loop: bool = False,
    durable_loop: bool = False,
    profile: Path | None = None,
) -> dict[str, float]:
    """One run against a fresh sandbox: ``runbook apply`` (or, with ``hand_loop``, the
    baseline loop at the same fixed 0.5 s polling); under cProfile into ``profile``."""
    plan, scenario = write_files(tmp, workload, polling)
    sandbox, url = start_sandbox(scenario)
    state = Path(tempfile.mkdtemp(dir=tmp))  # a fresh journal for each run
    try:
        before = stats(url)["requests_total"]
        env = {**os.environ, "NEXADATA_TOKEN": "sandbox", "RUNBOOK_STATE_DIR": str(state)}
        entry = ["-m", "runbook"] if journal else ["-c", WITHOUT_JOURNAL]
        command = [sys.executable, *entry, "apply", str(plan), "--api-url", url, "--quiet"]
        if hand_loop:
            command = [sys.executable, str(HAND_LOOP), str(plan), "--api-url", url]
        if durable_loop:
            command = [sys.executable, str(DURABLE_LOOP), str(plan), "--api-url", url]
            command += ["--journal", str(state / "journal.sqlite3")]
        if profile is not None:
            command[1:1] = ["-m", "cProfile", "-o", str(profile)]
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            raise RuntimeError(f"apply exited {process.returncode}")
        after = stats(url)
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=30)
    steps = workload.layers * workload.width
    cpu = usage.ru_utime + usage.ru_stime
    return {
        "wall": wall,
        "cpu": cpu,
        "cpu_ms_per_step": cpu / steps * 1000,
        "requests_per_step": (after["requests_total"] - before) / steps,
        "rss_mb": usage.ru_maxrss / 1024,
        "peak_in_flight": after["peak_in_flight"],
        "journal_bytes_per_step": journal_size(state) / steps,
    }


def journal_size(state: Path) -> int:
    path = state / "journal.sqlite3"
    return path.stat().st_size if path.exists() else 0


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def journal_share(workload: Workload, tmp: Path, repeat: int) -> None:
    """The journal's share of the apply process's CPU: runs with and without it,
    interleaved so that the machine's drift falls on both alike."""
    on: list[dict[str, float]] = []
    off: list[dict[str, float]] = []
    for _ in range(repeat):
        on.append(measure(workload, "fixed", tmp))
        off.append(measure(workload, "fixed", tmp, journal=False))
    cpu_on, cpu_off = median([r["cpu"] for r in on]), median([r["cpu"] for r in off])
    wall_on, wall_off = median([r["wall"] for r in on]), median([r["wall"] for r in off])
    steps = workload.layers * workload.width
    print(
        f"  journal share, fixed polling, median of {repeat}: CPU {cpu_on:.2f} s with, "
        f"{cpu_off:.2f} s without = {(cpu_on - cpu_off) / cpu_on:.1%} of the process "
        f"({(cpu_on - cpu_off) / steps * 1000:.2f} ms/step); makespan {wall_on:.2f} s "
        f"with, {wall_off:.2f} s without ({wall_on / wall_off - 1:+.1%}); "
        f"{median([r['journal_bytes_per_step'] for r in on]):.0f} bytes of journal per step"
    )
    print("    CPU with:    " + "  ".join(f"{r['cpu']:.2f}" for r in on))
    print("    CPU without: " + "  ".join(f"{r['cpu']:.2f}" for r in off))


def against_loop(workload: Workload, tmp: Path, repeat: int) -> None:
    """runbook (journal on), the durable hand-written loop and the bare one, fixed 0.5 s
    polling, interleaved."""
    runs: dict[str, list[dict[str, float]]] = {"runbook": [], "durable": [], "hand loop": []}
    for _ in range(repeat):
        runs["runbook"].append(measure(workload, "fixed", tmp))
        runs["durable"].append(measure(workload, "fixed", tmp, durable_loop=True))
        runs["hand loop"].append(measure(workload, "fixed", tmp, hand_loop=True))
    at_poll = ideal(workload, 0.5)
    figures = {}
    for who, results in runs.items():
        figures[who] = {key: median([r[key] for r in results]) for key in results[0]}
        f = figures[who]
        print(
            f"  {who:9s} median of {repeat}: makespan {f['wall']:6.2f} s "
            f"(/ideal@0.5s {f['wall'] / at_poll:.3f})  CPU {f['cpu']:.2f} s "
            f"({f['cpu_ms_per_step']:.2f} ms/step)  {f['requests_per_step']:.2f} req/step  "
            f"RSS {f['rss_mb']:.0f} MB   CPU runs: " + " ".join(f"{r['cpu']:.2f}" for r in results)
        )
    ours = figures["runbook"]
    for who in ("durable", "hand loop"):
        theirs = figures[who]
        print(
            f"  runbook / {who}: CPU per step {ours['cpu'] / theirs['cpu']:.2f}x, makespan "
            f"{ours['wall'] / theirs['wall']:.3f}x, peak RSS "
            f"{ours['rss_mb'] / theirs['rss_mb']:.2f}x"
        )
    durable, bare = figures["durable"], figures["hand loop"]
    print(f"  durable / hand loop: CPU per step {durable['cpu'] / bare['cpu']:.2f}x")


def where(filename: str, function: str) -> str:
    """The package a profiled function belongs to, as the breakdown groups them."""
    if filename == "~":  # a built-in: the method's own type says whose it is
        for owner, group in (("sqlite3", "sqlite3"), ("socket", "socket"), ("_ssl", "ssl")):
            if owner in function:
                return group
        return "builtins"
    if "site-packages/" in filename:
        return filename.split("site-packages/")[1].split("/")[0].removesuffix(".py")
    if "/runbook/" in filename and "/benchmarks/" not in filename:
        return "runbook"
    if "/benchmarks/" in filename:
        return "the loop itself"
    return "asyncio" if "/asyncio/" in filename else "stdlib, the rest"


def breakdown(path: Path) -> dict[str, float]:
    """Own time (cProfile's tottime, wall clock) by package; the wait in epoll left out."""
    groups: dict[str, float] = {}
    raw: dict = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    for (filename, _, function), (_, _, own, _, _) in raw.items():
        if "epoll" in function and "poll" in function:
            continue  # waiting for the network, not work
        group = where(filename, function)
        groups[group] = groups.get(group, 0.0) + own
    return groups


def profiled(workload: Workload, tmp: Path, out: Path) -> None:
    """runbook and the durable loop, once each under cProfile: where the time goes."""
    out.mkdir(parents=True, exist_ok=True)
    figures = {}
    for who, durable in (("runbook", False), ("durable", True)):
        target = out / f"{workload.name}-{who}.prof"
        run = measure(workload, "fixed", tmp, durable_loop=durable, profile=target)
        figures[who] = (run, breakdown(target))
    print(f"  under cProfile (own time, s; CPU {figures['runbook'][0]['cpu']:.2f} s and "
          f"{figures['durable'][0]['cpu']:.2f} s with the profiler's own cost):")  # fmt: skip
    ours, theirs = figures["runbook"][1], figures["durable"][1]
    for group in sorted(set(ours) | set(theirs), key=lambda g: -ours.get(g, 0.0)):
        if max(ours.get(group, 0.0), theirs.get(group, 0.0)) < 0.01:
            continue
        print(f"    {group:22s} runbook {ours.get(group, 0.0):6.2f}   durable loop "
              f"{theirs.get(group, 0.0):6.2f}")  # fmt: skip
    print(f"    {'all':22s} runbook {sum(ours.values()):6.2f}   durable loop "
          f"{sum(theirs.values()):6.2f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="layered,wide")
    parser.add_argument("--polling", default="fixed,adaptive")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--journal-share",
        action="store_true",
        help="also measure fixed-polling runs with and without the journal (--repeat each)",
    )
    parser.add_argument(
        "--against-loop",
        action="store_true",
        help="runbook against the hand-written loop (benchmarks/hand_loop.py), fixed 0.5 s "
        "polling, --repeat interleaved pairs",
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        type=Path,
        help="runbook and the durable loop once each under cProfile: .prof files in DIR "
        "and where the time goes, by package",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.workloads.split(","):
            workload = WORKLOADS[name]
            best, at_poll = ideal(workload, None), ideal(workload, 0.5)
            print(
                f"{name}: {workload.layers * workload.width} steps, max_parallel "
                f"{workload.max_parallel}; ideal {best:.2f} s, ideal at 0.5 s polling "
                f"{at_poll:.2f} s"
            )
            for polling in filter(None, args.polling.split(",")):
                runs = [measure(workload, polling, Path(tmp)) for _ in range(args.repeat)]
                runs.sort(key=lambda r: r["wall"])
                r = runs[len(runs) // 2]
                print(
                    f"  {polling:8s} makespan {r['wall']:6.2f} s  /ideal {r['wall'] / best:.3f}"
                    f"  /ideal@0.5s {r['wall'] / at_poll:.3f}  CPU {r['cpu']:.2f} s "
                    f"({r['cpu_ms_per_step']:.2f} ms/step)  {r['requests_per_step']:.1f} "
                    f"req/step  RSS {r['rss_mb']:.0f} MB  peak in flight "
                    f"{r['peak_in_flight']}  journal {r['journal_bytes_per_step']:.0f} B/step"
                )
            if args.against_loop:
                against_loop(workload, Path(tmp), args.repeat)
            if args.profile is not None:
                profiled(workload, Path(tmp), args.profile)
            if args.journal_share:
                journal_share(workload, Path(tmp), args.repeat)


if __name__ == "__main__":
    main()
