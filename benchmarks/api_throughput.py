"""The API client against the sandbox: requests/s served, client CPU per request.

The sandbox runs under uvicorn in its own process (``runbook sandbox --port 0``, every
execution running forever); this process triggers a few executions, then N concurrent
pollers poll them through one ``NexadataClient`` for a fixed number of requests.
Prints requests/s (what the sandbox served) and this process's CPU per request.
Targets: the sandbox serves >= 2,000 requests/s; client CPU <= 0.5 ms/request.

    python benchmarks/api_throughput.py [--pollers 64] [--requests 20000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from sandbox_process import start_sandbox, stats

from runbook.api import NexadataClient, RateBudget, Token

SCENARIO = "default: {queue: 0, duration: forever}\n"


async def run(url: str, pollers: int, total: int, in_flight: int) -> tuple[float, float, int]:
    async with NexadataClient(
        url, Token("sandbox"), budget=RateBudget(rate=None), max_in_flight=in_flight
    ) as api:
        executions = [await api.trigger(1000 + n) for n in range(pollers)]
        per_poller = total // pollers

        async def poller(execution_id: int) -> None:
            for _ in range(per_poller):
                await api.get_execution(execution_id)

        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(poller(e.id) for e in executions))
        wall = time.perf_counter() - wall
        cpu = time.process_time() - cpu
        return wall, cpu, per_poller * pollers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pollers", type=int, default=64)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--in-flight", type=int, default=16, help="the client's max_in_flight")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        scenario = Path(tmp) / "forever.yaml"
        scenario.write_text(SCENARIO)
        process, url = start_sandbox(scenario)
        try:
            rates, cpus = [], []
            for _ in range(args.repeat):
                wall, cpu, done = asyncio.run(run(url, args.pollers, args.requests, args.in_flight))
                rates.append(done / wall)
                cpus.append(cpu / done * 1000)
                print(
                    f"  {done} requests in {wall:.2f} s: {done / wall:,.0f} req/s, "
                    f"client CPU {cpu / done * 1000:.3f} ms/request"
                )
            served = stats(url)
        finally:
            process.terminate()
            process.wait(timeout=10)
    print(f"pollers {args.pollers}, client max_in_flight {args.in_flight}")
    print(
        f"sandbox served (median): {statistics.median(rates):,.0f} requests/s "
        f"(target >= 2,000); total counted by the sandbox: {served['requests_total']}"
    )
    print(f"client CPU (median): {statistics.median(cpus):.3f} ms/request (target <= 0.5)")


if __name__ == "__main__":
    main()
