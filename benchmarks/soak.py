"""The soaks in their long form; ``tests/soak`` runs a bounded form in CI.

- fault: the *wide* workload (2,000 steps, 4 layers x 500, runs of 1-3 s, max_parallel
  500) against a sandbox answering 500 to 5 % of polls, 503 to 1 % of requests, 429
  above a rate limit below runbook's natural rate, 20 ms late, with 2 % of workflows
  failing once and retried. Checked as in CI, and the figures printed.
- crash: SIGKILL ``runbook apply`` at seeded random instants on a 100-step plan,
  resuming each time, ``--kills`` times; then resume to the end; checked as in CI.

    python benchmarks/soak.py [--only fault|crash] [--rate-limit 100] [--kills 100]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.soak.harness import (
    Shape,
    check_crash_soak,
    check_fault_soak,
    crash_soak,
    fault_soak,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["fault", "crash"])
    parser.add_argument("--rate-limit", type=float, default=100.0)
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--seed", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "fault"):
            shape = Shape(
                fail_first_share=0.02,
                cleanup_every=50,
                ignored_failures=5,
                seed=args.seed,
                faults={
                    "error_rate": 0.05,
                    "errors_on": ["poll"],
                    "unavailable_rate": 0.01,
                    "rate_limit": args.rate_limit,
                    "latency": "20ms",
                },
            )
            result = fault_soak(Path(tmp) / "fault", shape)
            check_fault_soak(result, shape)
            print(f"fault soak: {result.figures()}; every check passed")
        if args.only in (None, "crash"):
            shape = Shape(
                layers=10,
                width=10,
                max_parallel=10,
                duration=(5.0, 10.0),
                poll="0.2s",
                faults={"latency": "50ms"},
                cleanup_every=5,
                seed=args.seed,
            )
            soak, sandbox = crash_soak(
                Path(tmp) / "crash", shape, kills=args.kills, window=(0.3, 1.5), seed=args.seed
            )
            try:
                executions = {int(k): v for k, v in sandbox.stats()["executions"].items()}
            finally:
                sandbox.stop()
            check_crash_soak(soak, executions)
            print(f"crash soak: {soak.figures(executions)}; every check passed")


if __name__ == "__main__":
    main()
