from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from runbook import yamldoc
from runbook.errors import Problem
from runbook.yamldoc import Source, load, read_source


def doc_of(text: str):
    document, problems = load(Source("f.yaml", text, ""))
    return document, [str(p) for p in problems]


def test_plain_data_with_yaml_1_1_numbers_and_yaml_1_2_booleans() -> None:
    document, problems = doc_of(
        "a: 017\nb: 0x1f\nc: 1_000\nd: 2024-01-01\ne: ~\nf: yes\ng: 1.5\n"
        "h: true\ni: False\non: [off, No, Y]\n"
    )
    assert problems == []
    assert document.data == {
        "a": 15,
        "b": 31,
        "c": 1000,
        "d": "2024-01-01",
        "e": None,
        "f": "yes",  # YAML 1.2: only true and false are booleans
        "g": 1.5,
        "h": True,
        "i": False,
        "on": ["off", "No", "Y"],  # so notify's "on:" is a key, as in GitHub Actions
    }


def test_duplicate_keys_at_every_level() -> None:
    _, problems = doc_of("a: 1\nb:\n  c: 1\n  c: 2\n  d: [{e: 1, e: 2}]\na: 2\n")
    assert problems == [
        "f.yaml:4:3: duplicate key 'c' (first given at line 3)",
        "f.yaml:5:14: duplicate key 'e' (first given at line 5)",
        "f.yaml:6:1: duplicate key 'a' (first given at line 1)",
    ]


def test_merge_keys_follow_yaml_rules() -> None:
    document, problems = doc_of(
        "base: &b {x: 1, y: 2}\nmore: &m {y: 3, z: 4}\none: {<<: *b, x: 9}\ntwo: {<<: [*b, *m]}\n"
    )
    assert problems == []
    assert document.data["one"] == {"x": 9, "y": 2}
    assert document.data["two"] == {"x": 1, "y": 2, "z": 4}  # the first source wins


def test_merge_of_a_scalar_is_a_problem() -> None:
    _, problems = doc_of("a: {<<: 3}\n")
    assert problems == ["f.yaml:1:9: a merge key (<<) takes a mapping or a list of mappings"]


def test_non_scalar_key_is_a_problem() -> None:
    _, problems = doc_of("? [1, 2]\n: x\n")
    assert problems == ["f.yaml:1:3: a key must be a plain value, not a list or a mapping"]


def test_huge_integer_is_a_problem_not_a_crash() -> None:
    _, problems = doc_of("a: " + "9" * 5000 + "\n")
    assert len(problems) == 1
    assert problems[0].startswith("f.yaml:1:4: cannot read '999")


@pytest.mark.parametrize("tag", ["!!binary aGk=", "!!set {a}", "!!omap [a: 1]", "!env X"])
def test_tags_beyond_plain_data_are_refused(tag: str) -> None:
    _, problems = doc_of(f"a: {tag}\n")
    assert len(problems) == 1 and "unsupported YAML tag" in problems[0]
    assert problems[0].startswith("f.yaml:1:4:")


def billion_laughs(levels: int = 9) -> str:
    text = 'l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    for level in range(1, levels + 1):
        refs = ",".join([f"*l{level - 1}"] * 9)
        text += f"l{level}: &l{level} [{refs}]\n"
    return text


def test_alias_bomb_is_refused_fast() -> None:
    start = time.perf_counter()
    document, problems = doc_of(billion_laughs())
    elapsed = time.perf_counter() - start
    assert document is None
    assert problems == [
        "f.yaml:5:5: aliases expand to more than 100000 nodes; refusing to expand them "
        "(a YAML alias bomb?)"
    ]
    assert elapsed < 5  # generous: the point is "not 10**9 steps", not a speed figure


def test_aliases_below_the_budget_are_shared_not_copied() -> None:
    document, problems = doc_of(billion_laughs(levels=3))
    assert problems == []
    assert document.data["l3"][0] is document.data["l2"]


def test_recursive_alias() -> None:
    document, problems = doc_of("a: &a [1, *a]\n")
    assert problems == ["f.yaml:1:4: an alias refers to a node that contains it (recursive alias)"]
    assert document.data == {"a": [1, None]}


@pytest.mark.parametrize("depth", [65, 999])
def test_deep_nesting_is_a_problem(depth: int) -> None:
    _, problems = doc_of("a: " + "[" * depth + "]" * depth + "\n")
    assert len(problems) == 1
    assert problems[0].endswith("nested more than 64 levels deep")


def test_nesting_beyond_libyaml_limit_is_a_syntax_error() -> None:
    _, problems = doc_of("[" * 5000 + "]" * 5000)
    assert len(problems) == 1 and "YAML syntax error" in problems[0]


def test_block_nesting_is_bounded_too() -> None:
    text = "".join(f"{'  ' * i}k{i}:\n" for i in range(200)) + "  " * 200 + "v: 1\n"
    _, problems = doc_of(text)
    assert len(problems) == 1
    assert "nested more than 64 levels deep" in problems[0]


def test_control_character() -> None:
    _, problems = doc_of("a: b\nc: \x07\n")
    assert problems == ["f.yaml:2:4: YAML error: the character U+0007 is not allowed in YAML"]


def test_several_documents() -> None:
    _, problems = doc_of("a: 1\n---\nb: 2\n")
    assert len(problems) == 1
    assert problems == [
        "f.yaml:2:1: YAML syntax error: but found another document "
        "(expected a single document in the stream at line 1)"
    ]


def test_problem_points_at_value_key_or_missing_parent() -> None:
    document, _ = doc_of("top:\n  child: [10, 20]\n  other: x\n")
    assert document.problem(("top", "child", 1), "m") == Problem("f.yaml", 2, 15, "m")
    assert document.problem(("top", "other"), "m", key=True) == Problem("f.yaml", 3, 3, "m")
    assert document.problem(("top", "missing", "deeper"), "m") == Problem("f.yaml", 2, 3, "m")
    assert document.problem((), "m") == Problem("f.yaml", 1, 1, "m")


def test_problem_finds_merged_keys_and_integer_keys() -> None:
    document, _ = doc_of("b: &b {x: 1}\nm:\n  <<: *b\n  7: seven\n")
    assert document.problem(("m", "x"), "m") == Problem("f.yaml", 1, 11, "m")
    assert document.problem(("m", 7), "m") == Problem("f.yaml", 4, 6, "m")
    assert document.problem(("m", "7"), "m") == Problem("f.yaml", 3, 3, "m")  # not found: m


def test_read_source(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_bytes(b"\xef\xbb\xbfa: 1\n")
    source = read_source(path)
    assert isinstance(source, Source)
    assert source.text == "a: 1\n" and source.name == str(path)
    assert len(source.sha256) == 64


def test_read_source_problems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "missing.yaml"
    assert read_source(missing) == Problem(
        str(missing), 1, 1, "cannot read the file: No such file or directory"
    )
    assert read_source(tmp_path) == Problem(str(tmp_path), 1, 1, "is a directory, not a YAML file")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert read_source(fifo) == Problem(
        str(fifo), 1, 1, "is not a regular file (a FIFO, socket or device?)"
    )
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"a: 1\nname: caf\xe9\n")
    assert read_source(latin) == Problem(
        str(latin), 2, 10, "is not UTF-8: byte 0xe9 cannot be decoded"
    )
    monkeypatch.setattr(yamldoc, "MAX_BYTES", 4)
    assert read_source(latin) == Problem(str(latin), 1, 1, "is 16 bytes; the limit is 4")


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "secret.yaml"
    path.write_text("a: 1")

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("builtins.open", refuse)  # root reads any file: simulate the refusal
    assert read_source(path) == Problem(str(path), 1, 1, "cannot read the file: Permission denied")
