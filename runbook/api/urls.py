"""Where a secret may be sent: the API's base URL and the OAuth token endpoint."""

from __future__ import annotations

from runbook.errors import ConfigError
from runbook.netenv import url_fault
from runbook.text import printable

__all__ = ["check_base_url", "check_token_url"]


def check_base_url(url: str) -> str:
    """The base URL, if the token may be sent there; otherwise a ConfigError (exit 3).

    HTTPS always, except to a loopback host (127.0.0.0/8, ::1, localhost), where plain
    HTTP is the sandbox's.
    """
    return _checked(url, "the API URL", "the token").rstrip("/")


def check_token_url(url: str) -> str:
    """The OAuth token endpoint, if the client's credentials may be sent there (the
    rule of the base URL); otherwise a ConfigError (exit 3)."""
    return _checked(url, "the token URL", "the client's credentials")


def _checked(url: str, what: str, secret: str) -> str:
    url = url.strip()
    match url_fault(url):
        case None:
            return url
        case "unreadable":
            raise ConfigError(
                f"{what} {printable(url)!r} cannot be read (check its host name and port)"
            )
        case "not http":
            raise ConfigError(f"{what} {url!r} is not an http(s) URL with a host")
        case "credentials":
            raise ConfigError(f"{what} must not contain a user name or password")
        case "insecure":
            raise ConfigError(
                f"refusing to send {secret} to {url}: {what} must use https:// "
                "(plain http:// is allowed only to a loopback host such as 127.0.0.1)"
            )
