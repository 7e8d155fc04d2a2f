"""What ``apply`` was asked, as one frozen object checked when it is made: flags that
contradict each other are a UsageError (exit 2) before anything is read or sent. It
also knows the command that resumes the run, and what the journal keeps of it."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Literal

from runbook.errors import UsageError
from runbook.text import shell_word

__all__ = ["ApplyOptions"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ApplyOptions:
    """Everything ``apply`` was asked, checked as a whole when it is made: flags that
    contradict each other are a UsageError (exit 2) before anything is read or sent."""

    plan_path: str
    state_dir: str | None = None
    resume: bool = False
    retrigger_unknown: bool = False
    api_url: str | None = None
    token_file: str | None = None
    token_command: str | None = None
    sandbox: bool = False
    token_ttl: float | None = None
    new_run: bool = False
    scenario: str | None = None
    max_parallel: int | None = None
    report: str | None = None
    junit: str | None = None
    timeline: str | None = None
    quiet: bool = False
    log_format: Literal["text", "json"] = "text"
    metrics_dir: str | None = None
    selects: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.scenario and not self.sandbox:
            raise UsageError("--scenario configures the built-in simulator: add --sandbox")
        if self.sandbox and self.api_url:
            raise UsageError("--sandbox runs against the built-in simulator: drop --api-url")
        if self.sandbox and self.token_file:
            raise UsageError("--sandbox needs no token: drop --token-file")
        if self.sandbox and self.token_command:
            raise UsageError("--sandbox needs no token: drop --token-command")
        if self.token_command is not None and not self.token_command.strip():
            raise UsageError("--token-command is empty: give the command that prints the token")
        if self.token_file and self.token_command:
            raise UsageError("--token-file and --token-command are two token sources: choose one")
        if self.token_ttl is not None and not self.sandbox:
            raise UsageError("--token-ttl configures the built-in simulator: add --sandbox")
        if self.token_ttl is not None and self.token_ttl <= 0:
            raise UsageError("--token-ttl must be more than 0 s")
        if self.new_run and self.resume:
            raise UsageError("--new-run starts a new run and --resume continues one: choose one")
        if self.retrigger_unknown and not self.resume:
            raise UsageError("--retrigger-unknown goes with --resume")
        if self.resume and self.sandbox:
            raise UsageError(
                "--resume cannot use --sandbox: the built-in simulator forgets its executions "
                "when apply ends; serve one with 'runbook sandbox' and point --api-url at it"
            )
        if self.max_parallel is not None and self.max_parallel < 1:
            raise UsageError("--max-parallel must be at least 1")

    @property
    def resume_command(self) -> str:
        """The command that continues this run (a token command by its first word only:
        its arguments may hold secrets)."""
        extra = f" --state-dir {shell_word(self.state_dir)}" if self.state_dir else ""
        if self.api_url:
            extra += f" --api-url {shell_word(self.api_url)}"
        if self.token_file:
            extra += f" --token-file {shell_word(self.token_file)}"
        if self.token_command:
            first = shlex.split(self.token_command)[0]  # not blank: refused when made
            extra += f" --token-command {shell_word(first + ' ...')}"
        for spec in self.selects:
            extra += f" --select {shell_word(spec)}"
        for spec in self.excludes:
            extra += f" --exclude {shell_word(spec)}"
        return f"runbook apply {shell_word(self.plan_path)} --resume{extra}"

    @property
    def recorded(self) -> dict[str, object]:
        """What the journal keeps of the options (never the token or its file)."""
        return {
            "api_url": self.api_url,
            "sandbox": self.sandbox,
            "scenario": self.scenario,
            "max_parallel": self.max_parallel,
            "select": list(self.selects),
            "exclude": list(self.excludes),
        }
