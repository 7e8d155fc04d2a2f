"""The failures of the world around runbook: the API going away mid-run, a full disk
under the journal, a state dir that cannot be written. Each ends with a clear message
and its exit code, triggers nothing twice, and leaves a run that can be resumed."""

from __future__ import annotations

import contextlib
import functools
import os
import resource
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

import runbook.api.client
from runbook.sandbox.scenario import Scenario
from tests.support.entry import entry_point, without_coverage_hook
from tests.support.night import executions
from tests.support.proxy import Proxy


def test_the_api_going_away_fails_steps_in_bounded_tries_then_resume_reattaches(
    cli, api, plan, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the client's real policy (8 tries), with its backoff shortened for the test
    monkeypatch.setattr(
        runbook.api.client,
        "RetryPolicy",
        functools.partial(runbook.api.client.RetryPolicy, backoff_base=0.01, backoff_cap=0.02),
    )
    # extract outlasts side, so that when load is triggered nothing else is polled: the
    # first GET after load's POST is load's own poll, sent after the POST's answer
    app = api(
        Scenario(
            default={"queue": 0.0, "duration": 0.05},
            workflows={1: {"duration": 1.0}, 2: {"duration": 0.6}},
        )
    )
    port = urlsplit(os.environ["NEXADATA_API_URL"]).port
    seen_load = False

    def trip(data: bytes) -> bool:
        """Down at the first poll after load (workflow 2) was triggered."""
        nonlocal seen_load
        seen_load = seen_load or b"POST /api/v1/workflows/2/execute" in data
        return seen_load and data.startswith(b"GET ")

    with Proxy(port, trip) as proxy:
        monkeypatch.setenv("NEXADATA_API_URL", proxy.url)
        result = cli("apply", str(plan))
        assert proxy.is_down.is_set()
        assert result.code == 1, result.out + result.err
        assert "the API could not be reached for execution" in result.out
        assert "(gave up after 8 tries)" in result.out
        assert "Traceback" not in result.out + result.err
        assert executions(app) == {"1": 1, "2": 1, "3": 1}  # report never started
        proxy.trip = None
        proxy.up()
        resumed = cli("apply", str(plan), "--resume")
    assert resumed.code == 0, resumed.out + resumed.err
    assert "re-attached to execution" in resumed.out  # load's execution, not a new one
    assert executions(app) == {"1": 1, "2": 1, "3": 1, "4": 1}


def limit_file_size(size: int) -> None:
    """In the child: files may not grow past ``size`` bytes (a full disk for the
    journal); a write past it fails with EFBIG instead of killing the process."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))


def apply_on_a_full_disk(plan: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """``runbook apply`` of 60 quick steps whose journal outgrows 96 KiB part-way."""
    steps = "".join(f"  s{n:02d}: {{workflow_id: {n}}}\n" for n in range(1, 61))
    plan.write_text(
        "version: 1\nname: wide\nmax_parallel: 3\n"
        "defaults: {poll_interval: 20ms, max_poll_interval: 20ms}\nworkflows:\n" + steps
    )
    return subprocess.run(
        [*entry_point(), "apply", str(plan), *extra],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=functools.partial(limit_file_size, 96 * 1024),
        # coverage's own data file would hit the limit too (and say so in a traceback)
        env=without_coverage_hook(),
    )


def test_a_full_disk_mid_run_exits_5_and_the_run_resumes(cli, api, tmp_path: Path) -> None:
    app = api(Scenario(default={"queue": 0.0, "duration": 0.02}))
    plan = tmp_path / "wide.yaml"
    full = apply_on_a_full_disk(plan)
    assert full.returncode == 5, full.stdout + full.stderr
    assert "runbook: the journal " in full.stderr and "cannot be written" in full.stderr
    assert "runbook: run 1 stopped there: nothing was triggered after the failed write" in (
        full.stderr
    )
    assert f"resume with: runbook apply {plan} --resume" in full.stderr
    assert "Traceback" not in full.stdout + full.stderr
    made = app.state.sandbox.stats()["executions_total"]
    assert 0 < made < 60  # it stopped part-way
    resumed = cli("apply", str(plan), "--resume", "-q")
    if resumed.code == 1:  # the write that failed held execution ids: not guessed at
        # one group commit can hold several (more under load): each such step is refused
        ambiguous = resumed.out.count("not triggered again")
        assert ambiguous >= 1, resumed.out
        resumed = cli("apply", str(plan), "--resume", "--retrigger-unknown", "-q")
        assert resumed.code == 0, resumed.out + resumed.err
        counts = executions(app)
        assert app.state.sandbox.stats()["executions_total"] == 60 + ambiguous
        assert sorted(counts.values()) == [1] * (60 - ambiguous) + [2] * ambiguous
    else:
        assert resumed.code == 0, resumed.out + resumed.err
        assert executions(app) == {str(n): 1 for n in range(1, 61)}


def test_a_full_disk_under_a_sandbox_run_offers_no_resume(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("RUNBOOK_STATE_DIR", str(tmp_path / "state"))
    full = apply_on_a_full_disk(tmp_path / "wide.yaml", "--sandbox")
    assert full.returncode == 5, full.stdout + full.stderr
    assert full.stderr.endswith(
        "runbook: run 1 stopped there: nothing was triggered after the failed write\n"
    )
    assert "--resume" not in full.stderr  # the simulator ended with the run


@contextlib.contextmanager
def unwritable(path: Path) -> Iterator[None]:
    """``path`` cannot be written, even by root (which ignores modes): immutable."""
    if os.getuid() != 0:
        path.chmod(0o555)
        try:
            yield
        finally:
            path.chmod(0o755)
        return
    subprocess.run(["chattr", "+i", str(path)], check=True)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_an_unwritable_state_dir_or_journal_exits_5_before_any_request(
    cli, api, plan, tmp_path: Path
) -> None:
    app = api(Scenario())
    state = tmp_path / "locked"
    state.mkdir()
    with unwritable(state):
        result = cli("apply", str(plan), "--state-dir", str(state))
    assert result.code == 5
    assert result.err.startswith(f"runbook: the state dir {state} cannot be used: ")
    assert "choose another with --state-dir or RUNBOOK_STATE_DIR" in result.err
    journal = tmp_path / "state" / "journal.sqlite3"
    assert cli("history").code == 0  # makes the journal
    with unwritable(journal):
        result = cli("apply", str(plan))
    assert result.code == 5, result.err
    assert "runbook: the journal " in result.err
    assert app.state.sandbox.stats()["requests_total"] == 0
