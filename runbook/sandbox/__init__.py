"""The built-in Nexadata simulator: scenario, ASGI app, OAuth issuer, uvicorn server."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["SANDBOX_CLIENT_ID", "SANDBOX_CLIENT_SECRET", "SANDBOX_TOKEN", "SandboxOAuth"]

SANDBOX_TOKEN = "sandbox"
"""The token the simulator accepts unless told another: everyone knows it, so it serves
loopback only."""

SANDBOX_CLIENT_ID = "sandbox-client"
SANDBOX_CLIENT_SECRET = "sandbox-secret"
"""The OAuth client's credentials unless told others: as well known as the token."""


@dataclass(frozen=True, slots=True)
class SandboxOAuth:
    """The simulator's OAuth 2.0 client: its access tokens expire ``token_ttl`` seconds
    after they are issued, on the app's clock."""

    token_ttl: float
    client_id: str = SANDBOX_CLIENT_ID
    client_secret: str = field(default=SANDBOX_CLIENT_SECRET, repr=False)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.token_ttl) and self.token_ttl > 0):
            raise ValueError(
                f"token_ttl must be a positive number of seconds, not {self.token_ttl!r}"
            )
        for name in ("client_id", "client_secret"):
            text = getattr(self, name)
            if not text or not all(0x21 <= ord(c) <= 0x7E for c in text):
                raise ValueError(f"{name} must be one word of printable ASCII")

    @property
    def expires_in(self) -> int | float:
        """``token_ttl`` as a token answer's ``expires_in``: an integer when whole."""
        return int(self.token_ttl) if float(self.token_ttl).is_integer() else self.token_ttl
