"""The sandbox's OAuth 2.0 token endpoint as plain synchronous code on an injected clock.

Client authentication by HTTP Basic or by ``client_id``/``client_secret`` in the body
(RFC 6749 §2.3.1), the ``client_credentials`` and ``refresh_token`` grants (§4.4, §6)
and their answers (§5.1, §5.2); access tokens that expire ``token_ttl`` seconds after
they are issued; refresh tokens rotated on every exchange, with reuse detection
(OAuth 2.1, RFC 9700 §4.14.2).

Every token remembers the refresh token it was issued from, so the tokens form trees
rooted at a set of client credentials. A refresh token is good once: exchanged, it is
spent. Presented again, it is taken as stolen: it and every token issued from it since
(its whole subtree, access tokens included) are revoked, and the answer is
``invalid_grant``. The app (:mod:`runbook.sandbox.app`) only routes to :class:`Issuer`.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import math
import secrets
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote_plus

from runbook.sandbox import SandboxOAuth

__all__ = ["FORM", "GRANTS", "Issuer", "TokenError", "Verdict", "parse_form"]

GRANTS = ("client_credentials", "refresh_token")
FORM = "application/x-www-form-urlencoded"
BASIC_CHALLENGE = 'Basic realm="sandbox"'
MAX_FIELDS = 64

Verdict = Literal["valid", "expired", "revoked", "unknown"]
"""What an access token is worth now."""


class TokenError(Exception):
    """A §5.2 error answer: its status, ``error`` code and ``error_description``."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.status = status
        self.error = error
        self.description = description

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}

    def headers(self) -> dict[str, str]:
        """A 401 names the scheme to authenticate with (RFC 9110 §15.5.2)."""
        return {"WWW-Authenticate": BASIC_CHALLENGE} if self.status == 401 else {}


def _invalid_request(description: str) -> TokenError:
    return TokenError(400, "invalid_request", description)


def _invalid_client(description: str) -> TokenError:
    return TokenError(401, "invalid_client", description)


def _invalid_grant(description: str) -> TokenError:
    return TokenError(400, "invalid_grant", description)


def parse_form(content_type: str | None, body: bytes) -> list[tuple[str, str]]:
    """The parameters of a token request's body, in order; §3.2 asks for a form."""
    if (content_type or "").split(";", 1)[0].strip().lower() != FORM:
        raise _invalid_request(f"the body must be {FORM}")
    try:
        return parse_qsl(
            body.decode("utf-8"),
            keep_blank_values=True,
            errors="strict",
            max_num_fields=MAX_FIELDS,
        )
    except (UnicodeDecodeError, ValueError):
        raise _invalid_request(f"the body is not a {FORM} form in UTF-8") from None


def _parameters(form: Iterable[tuple[str, str]]) -> dict[str, str]:
    """§3.2: a parameter without a value is as if omitted; none may be given twice."""
    found: dict[str, str] = {}
    for name, value in form:
        if not value:
            continue
        if name in found:
            raise _invalid_request(f"the parameter {name} is given more than once")
        found[name] = value
    return found


@dataclass(slots=True)
class _Token:
    kind: Literal["access", "refresh"]
    parent: str | None
    """The refresh token it was issued from; None: from the client's credentials."""
    expires: float = math.inf
    used: bool = False
    revoked: bool = False
    children: list[str] = field(default_factory=list)


class Issuer:
    """The token store of one sandbox: issues, rotates, revokes and judges tokens."""

    def __init__(self, config: SandboxOAuth, clock: Callable[[], float]) -> None:
        self.config = config
        self.clock = clock
        self.requests: Counter[str] = Counter(dict.fromkeys(GRANTS, 0))
        self.reuse = 0
        self._tokens: dict[str, _Token] = {}
        self.first_refresh_token = self._issue("refresh", None)
        """Handed out with the credentials, as Nexadata's settings page does: the root
        of the family a ``grant: refresh_token`` client rotates."""

    def token(self, form: Iterable[tuple[str, str]], authorization: str | None) -> dict[str, Any]:
        """Answer a token request: the §5.1 answer, or raise :class:`TokenError`."""
        params = _parameters(form)
        grant = params.get("grant_type")
        if grant in GRANTS:
            self.requests[grant] += 1
        self._authenticate(params, authorization)
        if grant is None:
            raise _invalid_request("the parameter grant_type is missing")
        if grant not in GRANTS:
            raise TokenError(
                400,
                "unsupported_grant_type",
                "the sandbox offers the grants client_credentials and refresh_token",
            )
        parent = None if grant == "client_credentials" else self._spend(params)
        access = self._issue("access", parent, self.clock() + self.config.token_ttl)
        return {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": self.config.expires_in,
            "refresh_token": self._issue("refresh", parent),
        }

    def verdict(self, access_token: str) -> Verdict:
        found = self._tokens.get(access_token)
        if found is None or found.kind != "access":
            return "unknown"
        if found.revoked:
            return "revoked"
        return "expired" if self.clock() >= found.expires else "valid"

    def stats(self) -> dict[str, Any]:
        return {"token_requests": dict(self.requests), "refresh_token_reuse": self.reuse}

    def _authenticate(self, params: dict[str, str], authorization: str | None) -> None:
        if authorization is None:
            if "client_id" not in params or "client_secret" not in params:
                raise _invalid_client(
                    "client authentication is required: HTTP Basic, or client_id and "
                    "client_secret in the body"
                )
            self._check(params["client_id"], params["client_secret"])
            return
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() != "basic":
            raise _invalid_client("the token endpoint authenticates clients with HTTP Basic")
        if "client_secret" in params:
            raise _invalid_request(
                "the client authenticated twice, by HTTP Basic and by client_secret in the "
                "body: use one method"
            )
        client_id = self._basic(credentials.strip())
        if params.get("client_id", client_id) != client_id:
            raise _invalid_request("the body's client_id is not the client authenticated")

    def _basic(self, credentials: str) -> str:
        """The client id of valid Basic credentials: each part form-encoded (§2.3.1), or
        as curl -u sends it, raw."""
        try:
            pair = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise _invalid_client("the HTTP Basic credentials are not base64 of UTF-8") from None
        client_id, colon, secret = pair.partition(":")
        if not colon:
            raise _invalid_client("the HTTP Basic credentials are not client_id:client_secret")
        decoded = unquote_plus(client_id), unquote_plus(secret)
        for candidate in (decoded, (client_id, secret)):
            if self._refusal(*candidate) is None:
                return candidate[0]
        refusals = {self._refusal(*decoded), self._refusal(client_id, secret)}
        wrong = "wrong client secret"  # the client is known, one way or the other
        raise _invalid_client(wrong if wrong in refusals else "unknown client")

    def _check(self, client_id: str, secret: str) -> None:
        refusal = self._refusal(client_id, secret)
        if refusal is not None:
            raise _invalid_client(refusal)

    def _refusal(self, client_id: str, secret: str) -> str | None:
        """Why these credentials are refused, None if they are not."""
        if not hmac.compare_digest(client_id.encode(), self.config.client_id.encode()):
            return "unknown client"
        if not hmac.compare_digest(secret.encode(), self.config.client_secret.encode()):
            return "wrong client secret"
        return None

    def _spend(self, params: dict[str, str]) -> str:
        """Exchange a refresh token once; a second time revokes what came of it."""
        value = params.get("refresh_token")
        if value is None:
            raise _invalid_request("the parameter refresh_token is missing")
        found = self._tokens.get(value)
        if found is None or found.kind != "refresh":
            raise _invalid_grant("unknown refresh token")
        if found.used:
            self.reuse += 1
            count = self._revoke(value)
            raise _invalid_grant(
                f"the refresh token was used before: it and the {count} tokens issued "
                "from it since are revoked"
            )
        if found.revoked:
            raise _invalid_grant("the refresh token was revoked")
        found.used = True
        return value

    def _revoke(self, root: str) -> int:
        """Revoke ``root`` and its whole subtree; how many tokens are under it."""
        count = -1
        stack = [root]
        while stack:
            token = self._tokens[stack.pop()]
            token.revoked = True
            stack.extend(token.children)
            count += 1
        return count

    def _issue(
        self, kind: Literal["access", "refresh"], parent: str | None, expires: float = math.inf
    ) -> str:
        value = secrets.token_urlsafe(32)
        self._tokens[value] = _Token(kind, parent, expires)
        if parent is not None:
            self._tokens[parent].children.append(value)
        return value
