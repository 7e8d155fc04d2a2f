"""RELIABILITY.md names, for each guarantee, the test that fails if it breaks: every
name it cites must exist, or the document would promise a proof that is gone."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).parent.parent.parent


def test_every_test_reliability_md_cites_exists() -> None:
    text = (ROOT / "RELIABILITY.md").read_text()
    cited = re.findall(r"`(tests/[\w/]+\.py)(?:::(\w+))?`", text)
    assert len(cited) > 30
    for path, name in cited:
        source = ROOT / path
        assert source.is_file(), path
        if name:
            defined = {
                node.name
                for node in ast.walk(ast.parse(source.read_text()))
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            }
            assert name in defined, f"{path}::{name}"
