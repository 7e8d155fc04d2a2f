"""Which renderer shows a run, by name: the CLI picks one, nothing else chooses."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol, TextIO

from runbook.events import Event
from runbook.render.jsonlines import JsonLines
from runbook.render.runlog import PlainLines

__all__ = ["RUN_RENDERERS", "RunRenderer", "run_renderer_name"]


class RunRenderer(Protocol):
    """A sink that shows the run as it goes, and leaves its last word on ``close()``."""

    def __call__(self, event: Event) -> None: ...

    def close(self) -> None: ...


def _live(out: TextIO) -> RunRenderer:
    # rich loads only when a terminal shows the run
    from rich.console import Console

    from runbook.render.live import LiveView

    return LiveView(Console(file=out))


RUN_RENDERERS: Mapping[str, Callable[[TextIO], RunRenderer]] = {
    "live": _live,
    "plain": PlainLines,
    "json": JsonLines,
}
"""``live`` on a terminal, ``plain`` lines off one (cron, CI, pipes), ``json`` lines
with ``--log-format json``."""


def run_renderer_name(log_format: str, out: TextIO) -> str:
    """The renderer for ``--log-format`` on the stream ``out``."""
    if log_format == "json":
        return "json"
    return "live" if out.isatty() else "plain"
