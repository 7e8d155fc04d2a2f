"""The journal through real SQLite files: rows, reload, views, failures."""

from __future__ import annotations

import asyncio
import io
import json
import multiprocessing
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from runbook.events import (
    AttemptFinished,
    AttemptRecord,
    AttemptTriggered,
    AttemptTriggering,
    Notice,
    RetryScheduled,
    RunFinished,
    RunRecord,
    StepFinished,
    StepRecord,
)
from runbook.journal import JournalError, JournalSink, PlanLock, Store, state_dir
from runbook.journal.schema import SCHEMA_VERSION
from runbook.journal.sink import LINGER
from runbook.render.journalview import write_history, write_status
from tests.support.clocks import VirtualClock


def a_run() -> RunRecord:
    steps = {"a": StepRecord("a", 1, 1), "b": StepRecord("b", 2, 2)}
    return RunRecord(
        plan="p",
        run_id=None,
        max_parallel=2,
        steps=steps,
        assumed_done=("z",),
        started_at=1_800_000_000.0,
    )


def recorded_run(journal: Store, options: dict | None = None) -> tuple[RunRecord, JournalSink]:
    """A fresh run, written to ``journal``, and the sink that records its events."""
    run = a_run()
    run.run_id = journal.create_run(
        run,
        plan_path="p.yaml",
        plan_sha256="abc",
        options=options or {},
        started_at=run.started_at,
    )
    return run, JournalSink(journal, run.run_id)


def record_events(journal: JournalSink, run: RunRecord) -> None:
    a = run.steps["a"]
    attempt = AttemptRecord(1, 1_800_000_001.0)
    a.attempts.append(attempt)
    a.state, a.started_at = "running", attempt.triggered_at

    async def main():
        await journal(AttemptTriggering(a, attempt, 0))
        attempt.execution_id, attempt.state = 77, "created"
        attempt.record = {"id": 77, "state": "created"}
        await journal(AttemptTriggered(a, attempt, 0))
        attempt.state, attempt.ended_at = "failed", 1_800_000_005.0
        attempt.record = {
            "id": 77,
            "state": "failed",
            "errors": ["bad rows"],
            "start_at": "2027-01-15T08:00:01Z",
            "end_at": "2027-01-15T08:00:05Z",
        }
        # an end is queued, not waited for: the next awaited write commits it too
        assert journal(AttemptFinished(a, attempt, "failed", 0)) is None
        a.state, a.reason, a.ended_at = "failed", "execution 77 failed", 1_800_000_005.0
        assert journal(StepFinished(a, 0)) is None
        assert journal(Notice("hello", 0)) is None
        run.state, run.ended_at, run.reason = "failed", 1_800_000_006.0, None
        await journal(RunFinished(run, 0))

    asyncio.run(main())


def test_a_run_round_trips(tmp_path: Path) -> None:
    journal = Store(tmp_path / "state")
    run, sink = recorded_run(journal, {"x": 1})
    record_events(sink, run)
    row = journal.run_row()
    loaded = journal.load_run(row)
    assert (loaded.run_id, loaded.state, loaded.assumed_done) == (1, "failed", ("z",))
    (attempt,) = loaded.steps["a"].attempts
    assert (attempt.execution_id, attempt.state, attempt.errors) == (77, "failed", ("bad rows",))
    assert loaded.steps["b"].state == "pending" and loaded.steps["b"].attempts == []
    assert journal.resumable("p").id == 1
    assert [r.id for r in journal.runs("p", 5)] == [1] and journal.runs("q", 5) == []
    out = io.StringIO()
    write_status(out, row, loaded, "text")
    text = out.getvalue()
    assert text.startswith("Run 1 of p: failed (started 2027-01-15T08:00:00Z, 6s)\n")
    assert "  FAILED    a (workflow 1) in 4s: execution 77 failed\n" in text
    assert "            attempt 1: execution 77, failed, triggered 2027-01-15T08:00:01Z\n" in text
    assert "              error: bad rows\n" in text
    out = io.StringIO()
    write_status(out, row, loaded, "json")
    assert json.loads(out.getvalue())["steps"][0]["attempts"][0]["execution_id"] == 77
    out = io.StringIO()
    write_history(out, journal.runs(None, 5), "json")
    assert json.loads(out.getvalue())[0]["duration"] == 6.0
    out = io.StringIO()
    write_history(out, [], "text")
    assert out.getvalue() == "No runs in the journal.\n"
    journal.close()


def test_schema_is_versioned_and_reopening_migrates_nothing(tmp_path: Path) -> None:
    Store(tmp_path).close()
    journal = Store(tmp_path)
    rows = journal.db.execute("SELECT version FROM schema_version").fetchall()
    assert [tuple(row) for row in rows] == [(n,) for n in range(1, SCHEMA_VERSION + 1)]
    assert journal.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    journal.close()


def test_a_journal_of_the_first_schema_is_migrated_and_its_runs_still_load(
    tmp_path: Path,
) -> None:
    from runbook.journal.schema import MIGRATIONS

    db = sqlite3.connect(tmp_path / "journal.sqlite3")
    db.executescript(MIGRATIONS[0])
    db.executescript(
        "CREATE TABLE schema_version (version INTEGER NOT NULL);"
        "INSERT INTO schema_version VALUES (1);"
        "INSERT INTO runs VALUES (1, 'p', 'p.yaml', 'x', 1, 'h', 'failed', NULL, 4, '[]', "
        "'{}', 1.0, 2.0);"
        "INSERT INTO steps VALUES (1, 'a', 7, 1, 'failed', 'execution 1 failed', 1.0, 2.0);"
    )
    db.commit()
    db.close()
    journal = Store(tmp_path)
    run = journal.load_run(journal.run_row(1))
    step = run.steps["a"]
    assert (step.state, step.run_if, step.on_failure, step.ignored, step.why) == (
        "failed",
        "success",
        "stop",
        False,
        None,
    )
    journal.close()


def test_queued_writes_commit_in_order_with_the_next_awaited_one(tmp_path: Path) -> None:
    journal = Store(tmp_path)
    run, sink = recorded_run(journal)
    a, b = run.steps["a"], run.steps["b"]
    first, second = AttemptRecord(1, 1.0), AttemptRecord(1, 2.0)
    a.attempts.append(first)
    b.attempts.append(second)
    reader = sqlite3.connect(tmp_path / "journal.sqlite3")

    def states() -> dict[str, str]:
        return dict(reader.execute("SELECT name, state FROM steps ORDER BY name").fetchall())

    async def main():
        await sink(AttemptTriggering(a, first, 0))
        first.state, first.ended_at = "succeeded", 3.0
        a.state, a.ended_at = "succeeded", 3.0
        assert sink(AttemptFinished(a, first, "succeeded", 0)) is None
        assert sink(StepFinished(a, 0)) is None
        assert states()["a"] == "pending"  # queued, not yet committed
        await sink(RetryScheduled(a, 60.0, 0))  # a barrier before a wait: flushes
        assert states()["a"] == "succeeded"
        assert sink(RetryScheduled(a, 60.0, 0)) is None  # nothing queued: nothing to wait
        a.state, a.reason = "failed", "changed its mind"
        assert sink(StepFinished(a, 0)) is None
        b.state = "running"
        await sink(AttemptTriggering(b, second, 0))  # commits what was queued before it
        assert states() == {"a": "failed", "b": "running"}

    asyncio.run(main())
    reader.close()
    journal.close()


def test_a_write_nobody_waits_for_is_committed_after_linger_at_the_latest(
    tmp_path: Path,
) -> None:
    journal = Store(tmp_path)
    run, sink = recorded_run(journal)
    a, b = run.steps["a"], run.steps["b"]
    reader = sqlite3.connect(tmp_path / "journal.sqlite3")
    clock = VirtualClock()
    seen: dict[str, float] = {}

    def state(name: str) -> str:
        row = reader.execute("SELECT state FROM steps WHERE name = ?", (name,)).fetchone()
        return str(row[0])

    async def main():
        started = clock()
        a.state, a.reason = "failed", "gone"
        assert sink(StepFinished(a, 0)) is None
        await asyncio.sleep(0)
        assert state("a") == "pending"  # not one commit per loop iteration
        await asyncio.sleep(LINGER / 2)
        b.state, b.reason = "failed", "gone too"
        assert sink(StepFinished(b, 0)) is None  # joins the flush already due
        while state("a") == "pending" and clock() - started < 5:
            await asyncio.sleep(0.01)
        seen["a"] = clock() - started
        assert state("b") == "failed"  # one transaction

    clock.run(main())
    assert LINGER <= seen["a"] <= LINGER + 0.011
    reader.close()
    journal.close()


def test_a_queued_write_left_at_the_end_is_committed_on_close(tmp_path: Path) -> None:
    journal = Store(tmp_path)
    run, sink = recorded_run(journal)
    a = run.steps["a"]
    a.state, a.reason = "failed", "gone"

    async def main():
        assert sink(StepFinished(a, 0)) is None  # the loop ends before its flush

    loop = asyncio.new_event_loop()
    loop.run_until_complete(main())
    loop.close()
    sink.close()
    journal.close()
    reopened = Store(tmp_path)
    assert reopened.load_run(reopened.run_row()).steps["a"].reason == "gone"
    reopened.close()


def test_a_failed_queued_write_fails_the_next_one(tmp_path: Path) -> None:
    journal = Store(tmp_path)
    sink = JournalSink(journal, 999)  # a run whose step rows a trigger refuses to update
    step = StepRecord("a", 1, 1)
    attempt = AttemptRecord(1, 0.0)
    failures = []

    async def main():
        journal.db.execute(
            "CREATE TRIGGER refuse BEFORE UPDATE ON steps BEGIN "
            "SELECT RAISE(ABORT, 'disk says no'); END"
        )
        journal.db.execute(
            "INSERT INTO runs (id, plan, plan_path, plan_sha256, pid, host, "
            "state, max_parallel, assumed_done, options, started_at) "
            "VALUES (999, 'p', 'p', '', 1, 'h', 'running', 1, '[]', '{}', 0)"
        )
        journal.db.execute(
            "INSERT INTO steps (run_id, name, workflow_id, stage, state) "
            "VALUES (999, 'a', 1, 1, 'pending')"
        )
        assert sink(StepFinished(step, 0)) is None
        await asyncio.sleep(LINGER)  # the flush runs, and fails
        for event in (Notice("x", 0), AttemptTriggering(step, attempt, 0)):
            try:
                sink(event)
            except JournalError as error:
                failures.append(str(error))

    VirtualClock().run(main())
    assert len(failures) == 2 and all("disk says no" in f for f in failures)
    journal.close()


def test_a_failed_write_is_a_journal_error(tmp_path: Path) -> None:
    journal = Store(tmp_path)
    sink = JournalSink(journal, 999)  # no such run: the foreign key refuses the attempt row
    step = StepRecord("a", 1, 1)
    attempt = AttemptRecord(1, 0.0)

    async def main():
        await sink(AttemptTriggering(step, attempt, 0))

    with pytest.raises(JournalError, match="cannot be written"):
        asyncio.run(main())
    journal.close()


def test_state_dir_precedence(tmp_path: Path) -> None:
    assert state_dir("/x", {"RUNBOOK_STATE_DIR": "/y"}) == Path("/x")
    assert state_dir(None, {"RUNBOOK_STATE_DIR": "/y", "XDG_STATE_HOME": "/z"}) == Path("/y")
    assert state_dir(None, {"XDG_STATE_HOME": "/z"}) == Path("/z/runbook")
    assert state_dir(None, {}).parts[-3:] == (".local", "state", "runbook")


def test_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    first, second = PlanLock(tmp_path, "p"), PlanLock(tmp_path, "p")
    first.acquire("run 3")
    with pytest.raises(Exception, match=r"\(pid \d+, run 3\)"):
        second.acquire()
    first.release()
    second.acquire()
    second.release()


def test_corrupt_database(tmp_path: Path) -> None:
    (tmp_path / "journal.sqlite3").write_bytes(b"garbage" * 1000)
    with pytest.raises(JournalError, match="cannot be opened"):
        Store(tmp_path)
    assert sqlite3.sqlite_version  # the stdlib's SQLite, nothing else


def test_a_state_dir_of_another_user_or_writable_by_others_is_refused(tmp_path: Path) -> None:
    if os.getuid() == 0:
        foreign = tmp_path / "foreign"
        foreign.mkdir()
        os.chown(foreign, 65534, 65534)
    else:  # a directory root owns
        foreign = Path("/")
    with pytest.raises(JournalError, match=r"belongs to another user \(uid \d+\)"):
        Store(foreign)
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(JournalError) as caught:
        Store(shared)
    assert str(caught.value) == (
        f"the state dir {shared} can be written by other users (mode 0777); make it yours "
        f"alone (chmod go-w {shared}) or choose another with --state-dir"
    )


def test_a_planted_journal_or_links_are_refused_and_nothing_is_overwritten(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    journal = state / "journal.sqlite3"
    journal.touch(mode=0o666)
    journal.chmod(0o666)
    with pytest.raises(
        JournalError, match=r"journal .* can be written by other users \(mode 0666\)"
    ):
        Store(state)
    journal.chmod(0o644)  # readable by others: made private, then used
    Store(state).close()
    assert stat.S_IMODE(journal.stat().st_mode) == 0o600
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (state / ".write-test").symlink_to(victim)  # the old fixed probe name
    lock = PlanLock(state, "p")
    lock.path.parent.mkdir(mode=0o700)
    lock.path.symlink_to(victim)
    Store(state).close()
    with pytest.raises(JournalError, match=r"the lock file .* cannot be opened"):
        lock.acquire()
    assert victim.read_text() == "precious"
    link = tmp_path / "linked"
    link.mkdir(mode=0o700)
    (link / "journal.sqlite3").symlink_to(victim)
    with pytest.raises(JournalError, match="is not a regular file"):
        Store(link)
    assert victim.read_text() == "precious"


def _open_journal(directory: str, barrier, results) -> None:
    barrier.wait()
    try:
        Store(Path(directory)).close()
        results.put("")
    except JournalError as exc:
        results.put(str(exc))


def test_processes_opening_a_new_journal_together_all_succeed(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    for round_ in range(8):
        directory = tmp_path / f"fresh{round_}"
        barrier, results = context.Barrier(4), context.Queue()
        processes = [
            context.Process(target=_open_journal, args=(str(directory), barrier, results))
            for _ in range(4)
        ]
        for process in processes:
            process.start()
        errors = [results.get(timeout=60) for _ in processes]
        for process in processes:
            process.join(60)
        assert errors == [""] * 4
        rows = sqlite3.connect(directory / "journal.sqlite3").execute(
            "SELECT version FROM schema_version"
        )
        assert [row[0] for row in rows] == list(range(1, SCHEMA_VERSION + 1))  # migrated once


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            "UPDATE attempts SET record = '{not json'",
            "attempts row 1/'a'/1: record is not JSON",
        ),
        (
            "UPDATE attempts SET record = '[1, 2]'",
            "attempts row 1/'a'/1: record is not a JSON dict",
        ),
        ("UPDATE attempts SET step = 'ghost'", "the attempt of a step the run does not have"),
        (
            "UPDATE runs SET started_at = 'yesterday'",
            "runs row 1: started_at holds str 'yesterday'",
        ),
        ("UPDATE steps SET workflow_id = 'x' WHERE name = 'b'", "steps row 1/'b': workflow_id"),
        ("UPDATE steps SET state = 'exploded' WHERE name = 'a'", "state holds str 'exploded'"),
        ("UPDATE runs SET assumed_done = '{'", "runs row 1: assumed_done is not JSON"),
        # a run_if: a word, or a mapping of names to known outcomes, as JSON
        ("UPDATE steps SET run_if = 'sometimes'", "steps row 1/'a': run_if holds str 'sometimes'"),
        ("""UPDATE steps SET run_if = '{"a": "done"}'""", 'run_if holds str \'{"a": "done"}\''),
        ("UPDATE steps SET run_if = '{'", "steps row 1/'a': run_if holds str '{'"),
        # a number SQLite keeps that is no time: infinite, before 1970, after 9999
        (
            "UPDATE runs SET started_at = 1e999",
            "runs row 1: started_at holds float inf, not a time between 1970 and 9999",
        ),
        ("UPDATE runs SET ended_at = -1e999", "runs row 1: ended_at holds float -inf"),
        ("UPDATE steps SET started_at = -1 WHERE name = 'a'", "steps row 1/'a': started_at"),
        ("UPDATE attempts SET triggered_at = 1e300", "attempts row 1/'a'/1: triggered_at holds"),
        ("UPDATE attempts SET ended_at = 253402300800", "attempts row 1/'a'/1: ended_at holds"),
    ],
)
def test_a_damaged_row_is_the_journals_error_not_a_crash(tmp_path: Path, damage, message) -> None:
    journal = Store(tmp_path)
    run, sink = recorded_run(journal)
    a = run.steps["a"]
    attempt = AttemptRecord(1, 1.0)
    a.attempts.append(attempt)

    async def main():
        await sink(AttemptTriggering(a, attempt, 1.0))

    asyncio.run(main())
    journal.db.execute("PRAGMA foreign_keys=OFF")
    journal.db.execute(damage)
    with pytest.raises(JournalError) as caught:
        journal.load_run(journal.run_row(1))
    assert message in str(caught.value)
    assert str(caught.value).startswith(f"the journal {journal.path} has a damaged row (")
    journal.close()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("ended_at = 'soon'", "runs row 1: ended_at holds str 'soon'"),
        # an infinite time: a number SQLite keeps, but no time runbook can have written
        ("ended_at = 1e999", "runs row 1: ended_at holds float inf, not a time"),
    ],
)
def test_status_history_and_resume_on_a_damaged_journal_exit_5(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str, message: str
) -> None:
    monkeypatch.setenv("NEXADATA_TOKEN", "t")
    journal = Store(tmp_path)
    recorded_run(journal)
    journal.db.execute(f"UPDATE runs SET {damage}, state = 'failed'")
    journal.close()
    plan = tmp_path / "p.yaml"
    plan.write_text("version: 1\nname: p\nworkflows:\n  a: {workflow_id: 1}\n")
    for argv in (
        ("status",),
        ("history",),
        ("apply", str(plan), "--resume", "--api-url", "http://127.0.0.1:9/api/v1"),
    ):
        result = cli(*argv, "--state-dir", str(tmp_path))
        assert result.code == 5, (argv, result.err)
        assert f"has a damaged row ({message}" in result.err


def test_strings_from_the_journal_are_printed_escaped(tmp_path: Path) -> None:
    journal = Store(tmp_path)
    recorded_run(journal)
    journal.db.execute(
        "UPDATE runs SET plan = 'p\x1b]0;x\x07', host = 'h\x1b[2J', reason = 'r\x1b[31m'"
    )
    journal.db.execute("UPDATE steps SET reason = 'why\x07' WHERE name = 'a'")
    out = io.StringIO()
    row = journal.run_row(1)
    write_status(out, row, journal.load_run(row), "text")
    write_history(out, journal.runs(None, 5), "text")
    journal.close()
    text = out.getvalue()
    assert "\x1b" not in text and "\x07" not in text
    assert "p\\x1b]0;x\\x07" in text and "h\\x1b[2J" in text and "why\\x07" in text


def test_a_holder_is_gone_when_nobody_holds_the_lock_and_its_pid_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket
    import subprocess

    from runbook.journal import lock as locks

    here = socket.gethostname()
    ended = subprocess.Popen(["true"])
    ended.wait()
    held = PlanLock(tmp_path, "p")
    held.acquire()
    # the lock listed: not gone, whatever the pid says
    assert locks.lock_held(tmp_path, "p") is True
    assert not locks.holder_gone(tmp_path, "p", ended.pid, here)
    held.release()
    assert locks.lock_held(tmp_path, "p") is False
    assert locks.holder_gone(tmp_path, "p", ended.pid, here)
    # a lock the kernel's list misses (btrfs, NFS): a live pid keeps the run running
    assert not locks.holder_gone(tmp_path, "p", os.getpid(), here)
    monkeypatch.setattr(locks, "_flock_holders", lambda *key: None)  # no list to read
    assert locks.holder_gone(tmp_path, "p", ended.pid, here)
    assert not locks.holder_gone(tmp_path, "p", os.getpid(), here)
    assert locks.holder_gone(tmp_path, "never-locked", ended.pid, here)
    monkeypatch.undo()
    # another host: nothing here can tell, however free the lock looks from here
    assert not locks.holder_gone(tmp_path, "p", ended.pid, "another-host")
