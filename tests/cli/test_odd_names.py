"""Names and paths an unusual (or hostile) environment hands runbook: a plan name that
Airflow refuses as a DAG id, characters that do not print bound for a generated file a
reviewer reads, and paths that are not UTF-8 — through the real command line."""

from __future__ import annotations

import ast
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runbook.options import ApplyOptions
from runbook.text import printable, shell_word
from tests.cli.test_export import assert_formatted, build
from tests.support.entry import entry_point, without_coverage_hook

SNEAKY = "sales eu/\u202enightly\u2066"
"""A name that reads as one thing and is another: a space, a slash, bidi controls."""

HOSTILE = """\
version: 1
name: "sales eu/\\u202enightly\\u2066"
description: "one\\u2028two \\u202eevil\\u2069 \\\\N{BULLET} \\\"\\\"\\\" \\u200b end"
workflows:
  a: {workflow_id: 1, description: "a\\u202eb\\x00c\\u2029d"}
"""


def test_a_name_airflow_refuses_is_exit_2_with_the_key_to_set(cli, tmp_path: Path) -> None:
    plan = tmp_path / "p.yaml"
    plan.write_text(HOSTILE)
    out = tmp_path / "dag.py"
    result = cli("export", "airflow", str(plan), "-o", str(out))
    assert result.code == 2
    assert result.out == "" and not out.exists()
    assert f"{plan}: the plan's name 'sales eu/\\u202enightly\\u2066' is not an Airflow DAG id" in (
        result.err
    )
    assert "airflow: {dag_id: sales_eu_nightly}" in result.err
    assert "\u202e" not in result.err  # shown escaped, as every message shows such text


@pytest.mark.parametrize("ident", ["a b", "x" * 251, "é", "a/b", ""])
def test_an_airflow_dag_id_is_checked_with_the_plan(cli, tmp_path: Path, ident: str) -> None:
    plan = tmp_path / "p.yaml"
    plan.write_text(
        f"version: 1\nairflow: {{dag_id: '{ident}'}}\nworkflows: {{a: {{workflow_id: 1}}}}\n"
    )
    result = cli("validate", str(plan))
    assert result.code == 2
    assert f"{plan}:2:" in result.err and "airflow.dag_id" in result.err


def test_a_dag_id_the_plan_sets_and_not_one_invisible_character_in_the_file(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = tmp_path / "p.yaml"
    plan.write_text(HOSTILE + "airflow: {dag_id: sales_eu}\n")
    result = cli("export", "airflow", str(plan))
    assert result.code == 0, result.err
    text = result.out
    # what a reviewer reads is what Python runs: every character that does not print is
    # an escape, so none of them is in the file
    assert all(c.isprintable() for line in text.split("\n") for c in line)
    assert "\\u202e" in text and "\\u2028" in text and "\\u0000" in text and "\\u200b" in text
    ast.parse(text)
    dag = build(text, monkeypatch)
    assert dag.kwargs["dag_id"] == "sales_eu"
    assert dag.kwargs["dag_display_name"] == SNEAKY
    assert dag.kwargs["description"] == 'one\u2028two \u202eevil\u2069 \\N{BULLET} """ \u200b end'
    assert dag.tasks[0].kwargs["doc_md"] == "a\u202eb\x00c\u2029d"
    assert_formatted(text)


# -- paths that are not UTF-8 ----------------------------------------------------------

ODD = os.fsdecode(b"night\xff\xfe")
"""A file name of bytes that are not UTF-8, as Python holds it (lone surrogates)."""


def _run(*argv: str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    """The real entry point with byte arguments, as a shell passes them."""
    return subprocess.run(
        [*entry_point(), *argv],
        capture_output=True,
        cwd=cwd,
        timeout=120,
        env={**without_coverage_hook(), "COLUMNS": "100", "LC_ALL": "C.UTF-8"},
    )


def test_a_plan_path_that_is_not_utf8_works_and_is_shown_escaped(tmp_path: Path) -> None:
    plan = tmp_path / f"{ODD}.yaml"
    plan.write_text(
        "version: 1\ndefaults: {poll_interval: 50ms}\n"
        "workflows: {load: {workflow_id: 1}, report: {workflow_id: 2, depends_on: load}}\n"
    )
    state = tmp_path / f"state{ODD}"
    validated = _run("validate", plan.name, cwd=tmp_path)
    assert validated.returncode == 0, validated.stderr
    assert validated.stdout == b"night\\xff\\xfe.yaml: ok (2 workflows, 1 dependency)\n"
    fast = tmp_path / f"fast{ODD}.yaml"
    fast.write_text("default: {queue: 0ms, duration: 50ms}\n")
    applied = _run(
        "apply",
        plan.name,
        "--sandbox",
        "--scenario",
        fast.name,
        "--state-dir",
        str(state),
        cwd=tmp_path,
    )
    assert applied.returncode == 0, applied.stderr
    assert b"Run 1 of night\\xff\\xfe succeeded" in applied.stdout  # the name from the file
    assert b"\xff" not in applied.stdout + applied.stderr
    (journal,) = (p for p in state.rglob("*") if p.is_file() and p.read_bytes()[:6] == b"SQLite")
    with sqlite3.connect(journal) as db:
        assert db.execute("SELECT plan_path FROM runs").fetchall() == [("night\\xff\\xfe.yaml",)]
    out = tmp_path / f"dag{ODD}.py"
    named = tmp_path / f"named{ODD}.yaml"
    named.write_text("name: minimal\n" + plan.read_text())
    exported = _run("export", "airflow", named.name, "-o", out.name, cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert exported.stderr.endswith(b"to dagnight\\xff\\xfe.py\n")
    header = out.read_text().splitlines()
    assert header[0].endswith("from namednight\\xff\\xfe.yaml")
    # the command in the header can be pasted into a shell, and names the same files
    assert (
        header[3]
        == "#   runbook export airflow $'namednight\\xff\\xfe.yaml' -o $'dagnight\\xff\\xfe.py'"
    )
    refused = _run("validate", f"gone{ODD}.yaml", cwd=tmp_path)
    assert refused.returncode == 2
    assert refused.stderr.startswith(b"gonenight\\xff\\xfe.yaml:1:1: cannot read the file")


def test_the_resume_command_quotes_what_does_not_print() -> None:
    options = ApplyOptions(plan_path=f"{ODD}.yaml", state_dir="/srv/st\u202ete")
    assert options.resume_command == (
        "runbook apply $'night\\xff\\xfe.yaml' --resume --state-dir $'/srv/st\\xe2\\x80\\xaete'"
    )


@settings(max_examples=60, deadline=None)
@given(
    st.text(
        st.characters(codec="utf-8", exclude_characters="\x00")
        | st.sampled_from(["\udcff", "\udc80", "'", "\\"])
    )
)
def test_a_shell_word_is_read_back_as_the_same_bytes(text: str) -> None:
    word = shell_word(text)
    assert printable(word) == word  # nothing in it that does not print
    echoed = subprocess.run(
        ["bash", "-c", f"printf %s {word}"], capture_output=True, check=True
    ).stdout
    assert echoed == text.encode("utf-8", "surrogateescape")
