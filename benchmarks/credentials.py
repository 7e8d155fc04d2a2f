"""What a token refresh costs, and how many token requests a long run makes.

- refresh: Credentials over the OAuth client source minting ``client_credentials``
  tokens from ``runbook sandbox --token-ttl`` in a process of its own on loopback, one
  refresh after another; and the same with 500 requests waiting on each refresh (they
  share it). Wall time and this process's CPU per refresh, medians.
- run: ``runbook apply`` of the wide 2,000-step plan (4 layers x 500, runs of 1-3 s,
  max_parallel 500) through the sandbox's OAuth client with tokens that live
  ``--token-ttl`` seconds, ``--grant`` client_credentials or refresh_token: token
  requests per token lifetime (the target: a handful at most), 401s after expiry,
  refresh tokens reused.

    python benchmarks/credentials.py [--only refresh|run] [--token-ttl 2] [--grant refresh_token]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runbook.api.credentials import Credentials
from runbook.api.oauth import OAuthClient, OAuthSource, token_transport
from runbook.api.secrets import Redactor, Secret
from tests.soak.harness import Sandbox, Shape, fault_soak


def refresh_cost(refreshes: int, waiters: int) -> tuple[float, float]:
    """Median wall and CPU seconds of one refresh (with ``waiters`` requests waiting)."""
    with tempfile.TemporaryDirectory() as tmp:
        scenario = Path(tmp) / "s.yaml"
        scenario.write_text("default: {queue: 0, duration: 1}\n")
        with Sandbox(scenario, token_ttl=3600) as sandbox:
            client = OAuthClient(sandbox.token_url, "sandbox-client", Secret("sandbox-secret"))

            async def main() -> tuple[list[float], list[float]]:
                redactor = Redactor()
                source = OAuthSource(client, transport=token_transport(), redactor=redactor)
                credentials = Credentials(source, redactor)
                walls, cpus = [], []
                token = await credentials.token()
                for _ in range(refreshes):
                    wall, cpu = time.perf_counter(), time.process_time()
                    await asyncio.gather(*(credentials.refused(token) for _ in range(waiters)))
                    token = await credentials.token()
                    walls.append(time.perf_counter() - wall)
                    cpus.append(time.process_time() - cpu)
                await source.aclose()
                assert credentials.refreshes == refreshes, credentials.refreshes
                return walls, cpus

            walls, cpus = asyncio.run(main())
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["refresh", "run"])
    parser.add_argument("--refreshes", type=int, default=200)
    parser.add_argument("--token-ttl", type=float, default=2.0)
    parser.add_argument("--grant", choices=["client_credentials", "refresh_token"])
    args = parser.parse_args()
    if args.only in (None, "refresh"):
        for waiters in (1, 500):
            wall, cpu = refresh_cost(args.refreshes, waiters)
            print(
                f"refresh with {waiters:>3} waiting: {wall * 1000:.2f} ms wall, "
                f"{cpu * 1000:.2f} ms CPU (median of {args.refreshes})"
            )
    if args.only in (None, "run"):
        for grant in [args.grant] if args.grant else ["client_credentials", "refresh_token"]:
            shape = Shape(
                layers=4,
                width=500,
                max_parallel=500,
                duration=(1.0, 3.0),
                poll="0.5s",
                token_ttl=args.token_ttl,
                grant=grant,
            )
            with tempfile.TemporaryDirectory() as tmp:
                result = fault_soak(Path(tmp), shape)
            assert result.exit_code == 0, result.output[-2000:]
            stats = result.stats
            minted = sum(stats["token_requests"].values())
            lifetimes = result.seconds / args.token_ttl
            print(
                f"2,000 steps, {grant}, {args.token_ttl:g} s tokens: {result.seconds:.1f} s, "
                f"{minted} token requests over {lifetimes:.1f} token lifetimes = "
                f"{minted / lifetimes:.2f} per lifetime (target <= 5); "
                f"{stats['expired_token_401s']} requests refused as expired, "
                f"{stats['refresh_token_reuse']} refresh tokens reused; "
                f"{stats['requests_total']} requests in all"
            )


if __name__ == "__main__":
    main()
