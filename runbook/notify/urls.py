"""The URLs of webhooks and pings: secrets, like the token.

A webhook URL (Slack's, a chat's, an incident tool's) carries its credential in its
path or query, and a ping URL its check's id: whoever has it can post in the channel or
silence the alarm. So a plan names the environment variable that holds the URL, the URL
is checked before anything is triggered, and only its host is ever shown, journaled or
reported.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from runbook.errors import ConfigError
from runbook.netenv import ProxySettings, url_fault

__all__ = ["SecretUrl", "secret_url"]


class SecretUrl:
    """A URL that shows only its host: not in repr, str, logs or messages."""

    __slots__ = ("_forms", "_url", "host", "proxy")

    def __init__(self, url: str, proxy: str | None = None) -> None:
        self._url = url
        parts = urlsplit(url)
        self.host: str = parts.hostname or "?"
        """What messages, the journal and the report name the receiver by."""
        self.proxy = proxy
        secret = urlunsplit(("", "", parts.path, parts.query, ""))
        forms = {url, secret, quote(url, safe=""), quote(secret, safe="")}
        for piece in (parts.path, parts.query):
            if piece not in ("", "/"):
                forms |= {piece, quote(piece, safe="")}
        self._forms = sorted((form for form in forms if len(form) > 1), key=len, reverse=True)

    def reveal(self) -> str:
        """The URL itself, for the request and nothing else."""
        return self._url

    def with_suffix(self, suffix: str) -> SecretUrl:
        """The URL with ``suffix`` appended to its path, before any query (a ping's
        ``/start`` and ``/fail``)."""
        parts = urlsplit(self._url)
        path = parts.path.rstrip("/") + suffix
        return SecretUrl(urlunsplit(parts._replace(path=path)), self.proxy)

    def redact(self, text: str) -> str:
        """``text`` with the URL, its path and its query replaced by ``***``."""
        for form in self._forms:
            if form in text:
                text = text.replace(form, "***")
        return text

    def __repr__(self) -> str:
        return f"SecretUrl('{self.host}/***')"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("a SecretUrl cannot be pickled")


def secret_url(variable: str, what: str, environ: Mapping[str, str] | None = None) -> SecretUrl:
    """The URL in environment variable ``variable`` (``what`` names its use in
    messages), with the proxy the environment names for it; a ConfigError (exit 3) if
    it is unset, empty, or not ``https://`` to a host other than loopback."""
    env = os.environ if environ is None else environ
    url = env.get(variable, "").strip()
    if not url:
        raise ConfigError(f"{what}: the environment variable {variable} is not set or empty")
    match url_fault(url):
        case None:
            return SecretUrl(url, ProxySettings.from_env(env).for_url(url))
        case "unreadable":
            raise ConfigError(f"{what}: {variable} does not hold a URL")
        case "not http":
            raise ConfigError(f"{what}: {variable} does not hold an http(s) URL with a host")
        case "credentials":
            raise ConfigError(f"{what}: the URL in {variable} must not contain a user or password")
        case "insecure":
            raise ConfigError(
                f"{what}: the URL in {variable} must use https:// (plain http:// is allowed "
                "only to a loopback host): it is a secret, and so is what runbook sends it"
            )
