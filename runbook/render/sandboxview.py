"""What ``runbook sandbox`` prints when it starts: where it is, the token, a curl to try;
with an OAuth client, its token URL, credentials and first refresh token too."""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING, TextIO

from runbook.durations import format_duration

if TYPE_CHECKING:
    from runbook.sandbox import SandboxOAuth

__all__ = ["write_banner"]


_WILDCARDS = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]"}


def write_banner(
    out: TextIO,
    url: str,
    token: str,
    scenario: str | None,
    oauth: SandboxOAuth | None = None,
    refresh_token: str | None = None,
) -> None:
    """The base URL, the token and commands to try. A sandbox listening on every address
    is shown at its loopback address: the one ``runbook apply`` accepts over http."""
    host = url.split("://", 1)[1].rsplit(":", 1)[0]
    if host in _WILDCARDS:
        url = url.replace(host, _WILDCARDS[host], 1)
    root = url.removesuffix("/api/v1")
    token_url = f"{root}/oauth/token"
    rows = [("base URL", url), ("token", token), ("stats", f"{root}/__sandbox/stats")]
    if oauth is not None:
        rows += [
            ("token URL", token_url),
            ("client id", oauth.client_id),
            ("client secret", oauth.client_secret),
            ("refresh token", refresh_token or "none"),
            ("token TTL", format_duration(oauth.token_ttl)),
        ]
    width = max(len(label) for label, _ in rows) + 2
    auth = f'-H "Authorization: Bearer {token}"'
    out.write(f"runbook sandbox: a simulated Nexadata API ({scenario or 'default scenario'})\n")
    out.writelines(f"  {label.ljust(width)}{value}\n" for label, value in rows)
    out.write(
        "\n"
        "Try it:\n"
        f'  curl -X POST {url}/workflows/29/execute {auth} -H "Content-Type: application/json"\n'
        f"  curl {url}/workflows/executions/1 {auth}\n"
    )
    if oauth is not None:
        client = shlex.quote(f"{oauth.client_id}:{oauth.client_secret}")
        out.write(f"  curl -u {client} -d grant_type=client_credentials {token_url}\n")
    out.write(
        f"\nRun a plan against it:\n  NEXADATA_TOKEN={token} runbook apply PLAN --api-url {url}\n"
    )
    if oauth is not None:
        out.write(
            f"  NEXADATA_CLIENT_ID={shlex.quote(oauth.client_id)} "
            f"NEXADATA_CLIENT_SECRET={shlex.quote(oauth.client_secret)} "
            f"NEXADATA_TOKEN_URL={token_url} runbook apply PLAN --api-url {url}\n"
            "  (that one needs an api.oauth mapping in the plan; with its grant "
            "refresh_token, set NEXADATA_REFRESH_TOKEN to the refresh token above)\n"
        )
    out.write("\nPress Ctrl-C to stop.\n")
    out.flush()
