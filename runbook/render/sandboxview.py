"""What ``runbook sandbox`` prints when it starts: where it is, the token, a curl to try."""

from __future__ import annotations

from typing import TextIO

__all__ = ["write_banner"]


_WILDCARDS = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]"}


def write_banner(out: TextIO, url: str, token: str, scenario: str | None) -> None:
    """The base URL, the token and commands to try. A sandbox listening on every address
    is shown at its loopback address: the one ``runbook apply`` accepts over http."""
    host = url.split("://", 1)[1].rsplit(":", 1)[0]
    if host in _WILDCARDS:
        url = url.replace(host, _WILDCARDS[host], 1)
    root = url.removesuffix("/api/v1")
    auth = f'-H "Authorization: Bearer {token}"'
    out.write(
        f"runbook sandbox: a simulated Nexadata API ({scenario or 'default scenario'})\n"
        f"  base URL  {url}\n"
        f"  token     {token}\n"
        f"  stats     {root}/__sandbox/stats\n"
        "\n"
        "Try it:\n"
        f'  curl -X POST {url}/workflows/29/execute {auth} -H "Content-Type: application/json"\n'
        f"  curl {url}/workflows/executions/1 {auth}\n"
        "\n"
        "Run a plan against it:\n"
        f"  NEXADATA_TOKEN={token} runbook apply PLAN --api-url {url}\n"
        "\n"
        "Press Ctrl-C to stop.\n"
    )
    out.flush()
