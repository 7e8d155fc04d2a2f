"""The soaks, in the bounded form CI runs (the long form: ``benchmarks/soak.py``).

Both drive the real ``runbook`` entry point against ``runbook sandbox`` in a process of
its own on loopback, and judge by the sandbox's counters: what the API really saw.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from runbook.sandbox.app import POLL, TRIGGER
from tests.soak.harness import (
    Shape,
    check_crash_soak,
    check_fault_soak,
    crash_soak,
    fault_soak,
)

# 2,000 steps in the wide shape; executions are short so that CI pays for requests,
# not for waiting. The rate limit is below what runbook asks for (about 1,600 polls a
# second wanted at 0.3 s with 500 in flight), so 429s really happen.
FAULT_SOAK = Shape(
    layers=4,
    width=500,
    max_parallel=500,
    duration=(0.2, 0.6),
    queue=0.05,
    poll="0.3s",
    fail_first_share=0.02,
    cleanup_every=50,
    ignored_failures=3,
    token_ttl=2.0,  # tokens that live 2 s, refreshed all through the run by rotation
    grant="refresh_token",
    faults={
        "error_rate": 0.05,
        "errors_on": ["poll"],  # a 500 on a trigger is ambiguous by the API's rules
        "unavailable_rate": 0.003,  # 503 on triggers too: safe to re-send
        "rate_limit": 200,
        "latency": "20ms",
    },
)

# 100 steps (and their clean-up steps) that take about 22 s in all, so that 20 kills
# 0.3-1 s apart (about 14 s) land while the plan is far from done. The latency is the
# instant between a POST and its answer where a kill leaves a trigger unanswered: some
# runs land kills there (at 50 ms, up to half of them did), others do not; the checks
# hold either way.
CRASH_SOAK = Shape(
    layers=10,
    width=10,
    max_parallel=10,
    duration=(1.0, 2.0),
    poll="0.2s",
    faults={"latency": "20ms"},
    cleanup_every=5,
    token_ttl=2.0,  # client_credentials: a kill inside a rotation is the documented
    # window (the next refresh is refused), not something a resume can mend
)
KILLS = 20


@pytest.mark.timeout(600)
def test_fault_soak(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = fault_soak(tmp_path, FAULT_SOAK)
    check_fault_soak(result, FAULT_SOAK)
    stats = result.stats
    assert stats["requests"][POLL].get("500", 0) > 0
    for status in ("429", "503"):
        assert sum(stats["requests"][route].get(status, 0) for route in (TRIGGER, POLL)) > 0
    assert stats["executions_total"] > FAULT_SOAK.layered_steps  # some steps did retry
    with capsys.disabled():
        print(f"\nfault soak: {result.figures()}")


@pytest.mark.timeout(900)
def test_crash_soak(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    soak, sandbox = crash_soak(tmp_path, CRASH_SOAK, kills=KILLS, window=(0.3, 1.0), seed=20)
    try:
        executions = {int(k): v for k, v in sandbox.stats()["executions"].items()}
    finally:
        sandbox.stop()
    assert soak.kills >= KILLS
    check_crash_soak(soak, executions)
    with contextlib.closing(sqlite3.connect(tmp_path / "state" / "journal.sqlite3")) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with capsys.disabled():
        print(f"\ncrash soak: {soak.figures(executions)}")
