"""The yardstick: the hand-written loop of ``hand_loop.py``, made as durable as runbook.

What a careful engineer would add to that loop before trusting it with the night: a
journal that survives a killed process. SQLite in WAL mode with ``synchronous=FULL``;
each attempt committed as *triggering* before its POST, its execution id committed
before the first poll (the only handle on a running workflow), every other write (the
states seen, the step's end) group-committed within 0.25 s, in order. Nothing else of
runbook's: no retries, no timeouts beyond aiohttp's, no resume logic, no report.

    python benchmarks/durable_loop.py PLAN --api-url URL --journal FILE [--poll 0.5]
    (token: NEXADATA_TOKEN)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import sys
import time

import aiohttp
import yaml

TERMINAL = {"succeeded", "failed"}
GROUP_COMMIT = 0.25


class Journal:
    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS attempts (step TEXT PRIMARY KEY, phase TEXT NOT NULL,"
            " execution_id INTEGER, state TEXT, triggered_at REAL, ended_at REAL)"
        )
        self.pending: list[tuple[str, tuple[object, ...]]] = []

    def now(self, sql: str, args: tuple[object, ...]) -> None:
        """Written and committed before the caller goes on (with whatever is queued)."""
        self.pending.append((sql, args))
        self.flush()

    def later(self, sql: str, args: tuple[object, ...]) -> None:
        self.pending.append((sql, args))

    def flush(self) -> None:
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        self.db.execute("BEGIN")
        for sql, args in batch:
            self.db.execute(sql, args)
        self.db.execute("COMMIT")

    async def committer(self) -> None:
        while True:
            await asyncio.sleep(GROUP_COMMIT)
            self.flush()


async def run(plan: dict, url: str, token: str, poll: float, journal: Journal) -> bool:
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
    committer = asyncio.create_task(journal.committer())

    connector = aiohttp.TCPConnector(limit=limit)
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def execute(name: str) -> None:
            workflow = steps[name]["workflow_id"]
            state = "failed"
            try:
                async with slots:
                    journal.now(
                        "INSERT INTO attempts (step, phase, triggered_at) VALUES (?, ?, ?)",
                        (name, "triggering", time.time()),
                    )
                    post = f"{url}/workflows/{workflow}/execute"
                    async with session.post(post) as answer:
                        answer.raise_for_status()
                        execution = (await answer.json())["id"]
                    journal.now(
                        "UPDATE attempts SET phase = 'in flight', execution_id = ? WHERE step = ?",
                        (execution, name),
                    )
                    poll_url = f"{url}/workflows/executions/{execution}"
                    seen = None
                    while True:
                        await asyncio.sleep(poll)
                        async with session.get(poll_url) as answer:
                            answer.raise_for_status()
                            state = (await answer.json())["state"]
                        if state != seen:
                            seen = state
                            journal.later(
                                "UPDATE attempts SET state = ? WHERE step = ?", (state, name)
                            )
                        if state in TERMINAL:
                            break
                    journal.later(
                        "UPDATE attempts SET phase = 'terminal', ended_at = ? WHERE step = ?",
                        (time.time(), name),
                    )
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
    committer.cancel()
    journal.flush()
    return len(outcome) == len(steps) and all(s == "succeeded" for s in outcome.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("plan")
    parser.add_argument("--api-url", required=True)
    parser.add_argument("--journal", required=True)
    parser.add_argument("--poll", type=float, default=0.5)
    args = parser.parse_args()
    with open(args.plan, "rb") as file:
        plan = yaml.load(file, Loader=yaml.CSafeLoader)
    journal = Journal(args.journal)
    token = os.environ["NEXADATA_TOKEN"]
    ok = asyncio.run(run(plan, args.api_url.rstrip("/"), token, args.poll, journal))
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
