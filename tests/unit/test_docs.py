"""The documentation stands alone and stays true: every relative link in every Markdown
file leads somewhere (its #anchor too), nothing points outside the repository, the
plans the docs show are valid, and every option the CLI has is documented."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import click
import pytest

from runbook.cli import cli
from runbook.plan import load_plan
from tests.support.paths import ROOT


def tracked(*patterns: str) -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", *patterns],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [ROOT / name for name in listed if (ROOT / name).is_file()]


MARKDOWN = tracked("*.md")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """A heading's anchor, as GitHub makes it."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {slug(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


def test_the_docs_exist_and_are_found() -> None:
    names = {path.relative_to(ROOT).as_posix() for path in MARKDOWN}
    for doc in ("plan-format", "cli", "nexadata-api", "architecture", "operations"):
        assert f"docs/{doc}.md" in names
    assert "README.md" in names and len(MARKDOWN) >= 8


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_leads_somewhere(path: Path) -> None:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        destination = (path.parent / file).resolve() if file else path
        assert destination.exists(), f"{path.name}: {target} leads nowhere"
        assert ROOT in destination.parents or destination == ROOT, f"{target} leaves the repo"
        if anchor and destination.suffix == ".md":
            assert anchor in anchors(destination), f"{path.name}: no #{anchor} in {file}"


def test_nothing_points_outside_the_repository() -> None:
    texts = tracked("*.md", "*.py", "*.yaml", "*.toml", "*.json")
    for path in texts:
        if path.resolve() == Path(__file__).resolve():
            continue
        text = path.read_text(errors="replace")
        assert not re.search(r"\.\./shared|shared/(spec|DESIGN|STYLE)", text), path
        assert not re.search(r"\bissue #?\d+\b", text, flags=re.I), path


def yaml_blocks(path: Path) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", path.read_text(), flags=re.S)


@pytest.mark.parametrize("doc", ["README.md", "docs/plan-format.md", "docs/operations.md"])
def test_the_plans_the_docs_show_are_valid(doc: str, tmp_path: Path) -> None:
    plans = [block for block in yaml_blocks(ROOT / doc) if block.find("version: 1") >= 0]
    assert plans
    for number, block in enumerate(plans):
        path = tmp_path / f"plan{number}.yaml"
        path.write_text(block)
        load_plan(path)  # raises PlanError, with every problem, if the docs drifted


def test_every_command_and_option_is_in_the_cli_doc() -> None:
    doc = (ROOT / "docs" / "cli.md").read_text()
    assert isinstance(cli, click.Group)
    with click.Context(cli) as ctx:
        commands = {name: cli.get_command(ctx, name) for name in cli.list_commands(ctx)}
    assert len(commands) == 11
    for name, command in commands.items():
        assert command is not None
        assert f"runbook {name}" in doc
        for param in command.params:
            for option in getattr(param, "opts", []):
                if option.startswith("--") and option != "--help":
                    assert f"`{option}" in doc or f"{option} " in doc, f"{name} {option}"
