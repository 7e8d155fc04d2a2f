"""The baseline: the simplest correct hand-written trigger-and-poll loop on aiohttp.

What a careful engineer would write instead of runbook for one plan: read the plan
(steps, ``workflow_id``, ``depends_on``, ``max_parallel``), start each step once all of
its upstreams succeeded, at most ``max_parallel`` at a time, in the plan's order; POST
its execute, then GET the execution every ``--poll`` seconds (fixed) until it succeeded
or failed; a failed step's downstream steps never start. No retries, no journal, no
timeouts beyond aiohttp's, no report: exit 0 if every step succeeded, else 1.

    python benchmarks/hand_loop.py PLAN --api-url URL [--poll 0.5]   (token: NEXADATA_TOKEN)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

import aiohttp
import yaml

TERMINAL = {"succeeded", "failed"}


async def run(plan: dict, url: str, token: str, poll: float) -> bool:
    steps = plan["workflows"]
    upstreams = {name: list(step.get("depends_on") or []) for name, step in steps.items()}
    downstream: dict[str, list[str]] = {name: [] for name in steps}
    for name, ups in upstreams.items():
        for up in ups:
            downstream[up].append(name)
    waiting = {name: len(ups) for name, ups in upstreams.items()}
    limit = int(plan.get("max_parallel", 4))
    slots = asyncio.Semaphore(limit)
    finished = asyncio.Event()
    outcome: dict[str, str] = {}
    tasks: set[asyncio.Task[None]] = set()

    connector = aiohttp.TCPConnector(limit=limit)
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def execute(name: str) -> None:
            workflow = steps[name]["workflow_id"]
            state = "failed"
            try:
                async with slots:
                    post = f"{url}/workflows/{workflow}/execute"
                    async with session.post(post) as answer:
                        answer.raise_for_status()
                        execution = (await answer.json())["id"]
                    poll_url = f"{url}/workflows/executions/{execution}"
                    while True:
                        await asyncio.sleep(poll)
                        async with session.get(poll_url) as answer:
                            answer.raise_for_status()
                            state = (await answer.json())["state"]
                        if state in TERMINAL:
                            break
            except (aiohttp.ClientError, TimeoutError, KeyError, ValueError) as exc:
                print(f"{name}: {exc!r}", file=sys.stderr)
                state = "failed"
            outcome[name] = state
            if state == "succeeded":
                for down in downstream[name]:
                    waiting[down] -= 1
                    if waiting[down] == 0:
                        start(down)
            if not tasks - {asyncio.current_task()}:
                finished.set()

        def start(name: str) -> None:
            task = asyncio.create_task(execute(name))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        for name in steps:  # the plan's order; the semaphore queues the rest
            if waiting[name] == 0:
                start(name)
        await finished.wait()
    return len(outcome) == len(steps) and all(s == "succeeded" for s in outcome.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("plan")
    parser.add_argument("--api-url", required=True)
    parser.add_argument("--poll", type=float, default=0.5)
    args = parser.parse_args()
    with open(args.plan, "rb") as file:
        plan = yaml.load(file, Loader=yaml.CSafeLoader)
    ok = asyncio.run(run(plan, args.api_url.rstrip("/"), os.environ["NEXADATA_TOKEN"], args.poll))
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
