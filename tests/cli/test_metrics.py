"""``apply --metrics-dir``: the Prometheus textfile, read with prometheus_client's own
parser while a real ``runbook apply`` runs, and after."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from runbook.notify.metrics import metrics_path
from runbook.sandbox.scenario import Scenario
from tests.support.entry import entry_point

FAST = {"queue": 0.0, "duration": 0.05}
NAME = 'night "wh" \\ load'  # a plan name that needs escaping as a label value


def write_plan(tmp_path: Path, name: str = NAME, steps: str = "") -> Path:
    path = tmp_path / "p.yaml"
    quoted = name.replace("\\", "\\\\").replace('"', '\\"')
    path.write_text(
        f'version: 1\nname: "{quoted}"\n'
        "defaults: {poll_interval: 20ms, max_poll_interval: 50ms, retry_delay: 10ms}\n"
        "workflows:\n"
        + (
            steps
            or "  a: {workflow_id: 1, retries: 1}\n  b: {workflow_id: 2, depends_on: a}\n"
            "  c: {workflow_id: 3, depends_on: a, on_failure: continue}\n"
            "  d: {workflow_id: 4, depends_on: c}\n"
        )
    )
    return path


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the file, by name and labels; raises if the file does not parse."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def digest(name: str) -> str:
    """The hash in the file name of a plan whose name is not a safe slug."""
    return hashlib.sha256(name.encode()).hexdigest()[:12]


def value(found: dict, name: str, **labels: str) -> float:
    return found[(name, tuple(sorted({"plan": NAME, **labels}.items())))]


def test_the_file_parses_at_every_moment_of_a_run_and_holds_its_values(api, tmp_path: Path) -> None:
    api(
        Scenario(
            default={"queue": 0.0, "duration": 0.3},
            workflows={1: {"fail_first": 1}, 3: {"outcome": "failed"}},
        )
    )
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    path = metrics_path(metrics, NAME)
    assert path.name == f"runbook_night__wh____load+{digest(NAME)}.prom"
    process = subprocess.Popen(
        [*entry_point(), "apply", str(write_plan(tmp_path)), "--metrics-dir", str(metrics)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    reads, in_progress = 0, set()
    while process.poll() is None or reads == 0:
        try:
            text = path.read_text()
        except FileNotFoundError:
            continue  # not written yet
        found = samples(text)  # a half-written file would not parse
        reads += 1
        in_progress.add(value(found, "runbook_run_in_progress"))
    _, err = process.communicate(timeout=60)
    assert process.returncode == 1, err
    assert reads > 10 and in_progress == {1.0, 0.0}  # read during the run, and after
    assert [p.name for p in metrics.iterdir()] == [path.name]  # no temporary file left
    found = samples(path.read_text())
    assert value(found, "runbook_run_in_progress") == 0
    assert value(found, "runbook_run_outcome", outcome="failed") == 1
    assert value(found, "runbook_run_outcome", outcome="succeeded") == 0
    assert value(found, "runbook_run_outcome", outcome="interrupted") == 0
    states = {"succeeded": 2, "failed": 1, "skipped": 1, "cancelled": 0, "pending": 0}
    for state, count in {**states, "running": 0}.items():
        assert value(found, "runbook_steps", state=state) == count
    assert value(found, "runbook_step_attempts", step="a", workflow_id="1") == 2
    assert value(found, "runbook_step_attempts", step="d", workflow_id="4") == 0
    assert value(found, "runbook_step_duration_seconds", step="a", workflow_id="1") > 0.6
    assert (
        "runbook_step_duration_seconds",
        (("plan", NAME), ("step", "d"), ("workflow_id", "4")),
    ) not in found
    start = value(found, "runbook_run_last_start_timestamp_seconds")
    end = value(found, "runbook_run_last_end_timestamp_seconds")
    assert end - start == pytest.approx(value(found, "runbook_run_duration_seconds"), abs=0.01)
    assert "runbook_run_last_success_timestamp_seconds" not in {name for name, _ in found}


def test_the_start_file_carries_the_last_finished_run_and_a_resume_counts_the_whole_run(
    cli, api, tmp_path: Path
) -> None:
    api(Scenario(default=FAST, workflows={2: {"fail_first": 1}}))
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    plan = write_plan(
        tmp_path, steps="  a: {workflow_id: 1}\n  b: {workflow_id: 2, depends_on: a}\n"
    )
    assert cli("apply", str(plan), "--metrics-dir", str(metrics)).code == 1
    first = samples(metrics_path(metrics, NAME).read_text())
    assert cli("apply", str(plan), "--metrics-dir", str(metrics), "--resume").code == 0
    found = samples(metrics_path(metrics, NAME).read_text())
    assert value(found, "runbook_run_outcome", outcome="succeeded") == 1
    run_start = value(first, "runbook_run_last_start_timestamp_seconds")
    assert value(found, "runbook_run_duration_seconds") == pytest.approx(
        value(found, "runbook_run_last_end_timestamp_seconds") - run_start, abs=1e-6
    )  # from the first invocation's start: the journal's and the first file's are one
    assert value(found, "runbook_run_last_success_timestamp_seconds") == value(
        found, "runbook_run_last_end_timestamp_seconds"
    )
    assert value(found, "runbook_step_attempts", step="b", workflow_id="2") == 2


def test_the_env_variable_names_the_dir_and_bad_dirs_are_usage_errors(
    cli, api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = api(Scenario(default=FAST))
    plan = write_plan(tmp_path, name="p", steps="  a: {workflow_id: 1}\n")
    missing = tmp_path / "nowhere"
    result = cli("apply", str(plan), "--metrics-dir", str(missing))
    assert (result.code, result.err) == (
        2,
        f"runbook: --metrics-dir {missing}: no such directory\n",
    )
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert cli("apply", str(plan), "--metrics-dir", str(blocker)).err.endswith(
        ": not a directory\n"
    )
    unwritable = cli("apply", str(plan), "--metrics-dir", "/proc")  # even root cannot
    assert unwritable.code == 2 and "--metrics-dir /proc: cannot write there (" in unwritable.err
    assert app.state.sandbox.stats()["requests_total"] == 0  # nothing was sent
    monkeypatch.setenv("RUNBOOK_METRICS_DIR", str(tmp_path))
    assert cli("apply", str(plan)).code == 0
    assert samples(metrics_path(tmp_path, "p").read_text())


def test_a_write_that_fails_mid_run_is_a_warning_and_the_run_goes_on(
    cli, api, tmp_path: Path
) -> None:
    """The directory goes away after the start file (a disk unmounted, full, removed):
    the end file cannot be written; the run and its journal are not touched."""
    api(Scenario(default=FAST))
    metrics = tmp_path / "metrics"
    metrics.mkdir()

    def remove_the_dir(event) -> None:
        if type(event).__name__ == "StepFinished":
            shutil.rmtree(metrics, ignore_errors=True)

    plan = write_plan(tmp_path, name="p", steps="  a: {workflow_id: 1}\n")
    import runbook.runner

    original = runbook.runner.run

    def run(prepared, sinks, **kwargs):
        return original(prepared, [*sinks, remove_the_dir], **kwargs)

    try:
        runbook.runner.run = run  # type: ignore[assignment]
        result = cli("apply", str(plan), "--metrics-dir", str(metrics))
    finally:
        runbook.runner.run = original  # type: ignore[assignment]
    assert result.code == 0
    path = metrics_path(metrics, "p")
    assert (
        f"warning: cannot write the metrics file {path}: No such file or directory; the run goes on"
        in result.out
    )
    assert "Run 1 of p succeeded" in result.out
    assert cli("status").out.startswith("Run 1 of p: succeeded")


def plans_of(path: Path) -> set[str]:
    return {dict(labels)["plan"] for _, labels in samples(path.read_text())}


def test_plans_whose_names_read_alike_keep_files_of_their_own(cli, api, tmp_path: Path) -> None:
    """``sales eu`` and ``sales/eu`` once shared ``runbook_sales_eu.prom``, and so did
    ``sales_eu``: the last to run wiped the others' series."""
    api(Scenario(default=FAST))
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    names = ["sales eu", "sales/eu", "sales_eu", "Sales_EU"]
    for name in names:
        plan = write_plan(tmp_path, name=name, steps="  a: {workflow_id: 1}\n")
        result = cli("apply", str(plan), "--metrics-dir", str(metrics))
        assert result.code == 0 and "warning" not in result.out + result.err, result.out
    assert sorted(path.name for path in metrics.iterdir()) == sorted(
        [
            f"runbook_sales_eu+{digest('sales eu')}.prom",
            f"runbook_sales_eu+{digest('sales/eu')}.prom",
            "runbook_sales_eu.prom",  # a name that is already a safe slug keeps its file
            "runbook_Sales_EU.prom",
        ]
    )
    for name in names:  # each still holds its own series, and no other plan's
        path = metrics_path(metrics, name)
        assert plans_of(path) == {name}
        found = samples(path.read_text())
        assert found[("runbook_run_outcome", (("outcome", "succeeded"), ("plan", name)))] == 1


OTHER = """\
# HELP runbook_run_in_progress 1 while the run is going, 0 after
# TYPE runbook_run_in_progress gauge
runbook_run_in_progress{plan="sales/eu"} 0.0
"""


def test_a_file_of_another_plan_at_the_name_is_left_as_it_is_and_said(
    cli, api, tmp_path: Path
) -> None:
    """Two names can still meet: ``Sales_EU`` and ``sales_eu`` on a filesystem that
    ignores case, or a file put there by hand."""
    api(Scenario(default=FAST))
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    path = metrics_path(metrics, "p")
    path.write_text(OTHER)
    plan = write_plan(tmp_path, name="p", steps="  a: {workflow_id: 1}\n")
    result = cli("apply", str(plan), "--metrics-dir", str(metrics))
    assert result.code == 0
    warning = (
        f"warning: the metrics file {path} belongs to plan 'sales/eu': it is left as it is, "
        "and this run's metrics are not written; the run goes on"
    )
    assert result.out.count(warning) == 1, result.out  # said once, not at each write
    assert "Run 1 of p succeeded" in result.out
    assert path.read_text() == OTHER  # not wiped
    assert [p.name for p in metrics.iterdir()] == [path.name]
    path.write_text("")  # nobody's: still not runbook's to overwrite
    result = cli("apply", str(plan), "--metrics-dir", str(metrics))
    assert result.code == 0 and path.read_text() == ""
    assert (
        f"warning: the metrics file {path} is not one runbook wrote for plan 'p': it is left "
        "as it is, and this run's metrics are not written; the run goes on"
    ) in result.out


def test_the_file_of_a_plan_whose_name_gained_a_hash_moves(cli, api, tmp_path: Path) -> None:
    """The file by the old name is removed once it is this plan's, so that node_exporter
    does not export stale series next to the new file's; another plan's stays."""
    api(Scenario(default=FAST))
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    old = metrics / "runbook_sales_eu.prom"
    old.write_text(OTHER)  # the old name of 'sales/eu' (and of 'sales eu')
    plan = write_plan(tmp_path, name="sales eu", steps="  a: {workflow_id: 1}\n")
    assert cli("apply", str(plan), "--metrics-dir", str(metrics)).code == 0
    assert old.read_text() == OTHER  # not this plan's
    plan = write_plan(tmp_path, name="sales/eu", steps="  a: {workflow_id: 1}\n")
    result = cli("apply", str(plan), "--metrics-dir", str(metrics))
    assert result.code == 0 and "warning" not in result.out
    assert sorted(p.name for p in metrics.iterdir()) == sorted(
        [
            f"runbook_sales_eu+{digest('sales eu')}.prom",
            f"runbook_sales_eu+{digest('sales/eu')}.prom",
        ]
    )
