"""Timeline files: the format a path asks for, the whole file written at once, and the
sink that rewrites it while a run goes (``apply --timeline``)."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Collection
from typing import Literal

from runbook.events import Event, RunFinished, RunRecord, RunStarted
from runbook.files import write_atomically
from runbook.render import timeline_html, timeline_mermaid, timeline_svg
from runbook.render.timeline import Timeline, build

__all__ = ["EVERY", "FORMATS", "TimelineFile", "format_for", "render", "write_timeline"]

Format = Literal["html", "svg", "mermaid"]
FORMATS: tuple[Format, ...] = ("html", "svg", "mermaid")
EVERY = 5.0
"""A run's timeline file is rewritten at most this often (seconds) while it goes."""


def format_for(path: str) -> Format:
    """The format a file's suffix asks for: ``.svg``, ``.mmd``, else HTML."""
    lowered = path.lower()
    if lowered.endswith(".svg"):
        return "svg"
    if lowered.endswith((".mmd", ".mermaid")):
        return "mermaid"
    return "html"


def render(timeline: Timeline, fmt: Format) -> str:
    match fmt:
        case "html":
            return timeline_html.html_page(timeline) + "\n"
        case "svg":
            return timeline_svg.svg(timeline)
        case "mermaid":
            return timeline_mermaid.mermaid(timeline)


def write_timeline(
    path: str,
    run: RunRecord,
    *,
    finally_steps: Collection[str],
    now: float | None = None,
    going: bool = False,
) -> None:
    """The timeline of ``run`` (drawn up to ``now``: by default its end), in the format
    ``path``'s suffix asks for, written atomically; an OSError is the caller's."""
    moment = now if now is not None else run.ended_at or run.started_at
    drawn = build(run, now=moment, finally_steps=finally_steps, going=going)
    write_atomically(path, render(drawn, format_for(path)))


class TimelineFile:
    """A sink that rewrites the run's timeline file atomically, at most every
    :data:`EVERY` seconds of ``clock``, while the run goes — a browser's refresh shows
    progress. Only a regular file (or none yet) is rewritten on the way: a FIFO or a
    terminal gets the one file written at the end. A write that fails is told once
    through ``warn`` and the run goes on."""

    def __init__(
        self,
        path: str,
        *,
        finally_steps: Collection[str],
        clock: Callable[[], float],
        wall: Callable[[], float],
        warn: Callable[[str], None],
    ) -> None:
        self.path = path
        self.finally_steps = finally_steps
        self._clock, self._wall, self._warn = clock, wall, warn
        self._next: float | None = None
        self._run: RunRecord | None = None
        self._failed = False
        self.writes = 0

    def __call__(self, event: Event) -> None:
        match event:
            case RunStarted(run=run):
                self._run = run
                self._next = self._clock()  # the first event after the start writes
            case RunFinished():
                self._run = None  # the last file is written with the summary
            case _:
                pass
        if self._run is None or self._next is None or self._clock() < self._next:
            return
        self._next = self._clock() + EVERY
        if not _rewritable(self.path):
            return
        self._write(self._run, going=True)

    def _write(self, run: RunRecord, *, going: bool) -> None:
        try:
            write_timeline(
                self.path, run, finally_steps=self.finally_steps, now=self._wall(), going=going
            )
            self.writes += 1
        except OSError as exc:
            if not self._failed:
                self._failed = True
                self._warn(f"cannot write {self.path}: {exc.strerror or exc}")


def _rewritable(path: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except FileNotFoundError:
        return True
    except OSError:
        return False
