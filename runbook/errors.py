"""The one exception tree of runbook; each class carries the exit code the CLI returns.

::

    RunbookError                 1  a run in which a step failed (not under on_failure: ignore)
    ├── UsageError               2  a bad command line (unknown step in a selection, ...)
    ├── InputError               2  a file that is not what it must be; carries its problems
    │   ├── PlanError            2  an invalid plan: nothing was sent
    │   └── ScenarioError        2  an invalid sandbox scenario
    ├── ConfigError              3  API configuration: no token, a non-HTTPS remote URL
    │   ├── AuthError            3  no token could be had, or the API refused it (401/403)
    │   │   └── CredentialCacheError 5  the credential cache became unusable mid-run
    │   ├── TlsError             3  the API's TLS certificate failed verification
    │   └── ProxyError           3  the proxy refused the tunnel for good (403, 407)
    ├── ApiError                 1  an API answer that fails a step (the run goes on)
    │   ├── WorkflowNotFound        404 on trigger: no such workflow in this organization
    │   ├── ExecutionNotFound       404 on poll: the execution is not visible to this token
    │   ├── TriggerRefused          another 4xx on trigger: provably not created
    │   ├── TriggerOutcomeUnknown   the trigger may or may not have created an execution
    │   └── ApiUnavailable          transient faults outlasted the retries
    ├── LockedError              4  another apply of the same plan is running
    └── JournalError             5  the run journal cannot be used (state dir, disk, damage)

Messages never contain a token: the API client redacts before raising.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from runbook.text import printable

__all__ = [
    "ONE_PER_LINE",
    "ApiError",
    "ApiUnavailable",
    "ApiUnreachable",
    "AuthError",
    "ConfigError",
    "CredentialCacheError",
    "ExecutionNotFound",
    "InputError",
    "JournalError",
    "LockedError",
    "PlanError",
    "Problem",
    "ProxyError",
    "RunbookError",
    "ScenarioError",
    "TlsError",
    "TriggerOutcomeUnknown",
    "TriggerRefused",
    "UsageError",
    "WorkflowNotFound",
]


@dataclass(frozen=True, slots=True, order=True)
class Problem:
    """One thing wrong in an input file, at a 1-based line and column."""

    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{printable(self.file)}:{self.line}:{self.column}: {self.message}"


ONE_PER_LINE = "\nrunbook: "
"""What joins the problems of one error into one message, each on a line of its own as
the command line shows errors (``runbook: ...``)."""


class RunbookError(Exception):
    """Base of every error runbook expects; ``exit_code`` is what the CLI returns."""

    exit_code: int = 1


class UsageError(RunbookError):
    """The command line asks for something that cannot be done; nothing was sent."""

    exit_code = 2


class InputError(RunbookError):
    """An input file with problems, every one of them found in one pass."""

    exit_code = 2
    kind = "input"

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(sorted(problems))
        count = len(self.problems)
        super().__init__(
            "\n".join(str(p) for p in self.problems) or f"invalid {self.kind} ({count} problems)"
        )


class PlanError(InputError):
    """An invalid plan."""

    kind = "plan"


class ScenarioError(InputError):
    """An invalid sandbox scenario."""

    kind = "scenario"


class ConfigError(RunbookError):
    """The API cannot be used as configured: no token, an insecure URL, ..."""

    exit_code = 3


class AuthError(ConfigError):
    """The API refused the token."""


class CredentialCacheError(AuthError):
    """The credential cache could not be read or written during a refresh: no token
    (an authentication failure for the run), and exit 5 like any unusable state file."""

    exit_code = 5


class TlsError(ConfigError):
    """The API's TLS certificate could not be verified (verification is never off)."""


class ProxyError(ConfigError):
    """The proxy refused to open a tunnel, and will refuse again (403, 407)."""


class ApiError(RunbookError):
    """An API outcome that fails the step it concerns; the message is one sentence."""


class WorkflowNotFound(ApiError):
    """The trigger answered 404."""


class ExecutionNotFound(ApiError):
    """A poll answered 404."""


class TriggerRefused(ApiError):
    """The trigger was refused (a 4xx other than 401/403/404/429): nothing was created."""


class TriggerOutcomeUnknown(ApiError):
    """The trigger's answer was lost: an execution may exist. Never re-sent silently."""


class ApiUnavailable(ApiError):
    """Transient faults (5xx, connection errors, malformed answers) outlasted the retries."""


class ApiUnreachable(ConfigError):
    """The API could not be reached at all (a name that does not resolve, a refused
    connection) before any request of this invocation got an answer: where the run
    goes is wrong, or the network is, and every step would fail the same way."""


class LockedError(RunbookError):
    """Another apply of the same plan holds the lock."""

    exit_code = 4


class JournalError(RunbookError):
    """The journal cannot be used; runbook will not run without one."""

    exit_code = 5
