"""Secrets that never show themselves, and the one redactor that knows them all.

A run may hold many secrets over its life: the API token it started with, every access
token minted or read since, an OAuth client's secret, every refresh token it exchanged
or was handed. Each is a :class:`Secret` (no repr, no str, no pickle), and each is added
to the run's :class:`Redactor` the moment it enters the process, before anything is
done with the answer that carried it: so a token rotated away an hour ago and echoed
back by a hostile API or token endpoint is still ``***``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

from runbook.errors import ConfigError
from runbook.text import is_token_text

__all__ = ["MIN_SCRUBBED", "Redactor", "Secret", "Token"]

MIN_SCRUBBED = 12
"""A secret shorter than this (the sandbox's ``sandbox``, a test token) is not scrubbed
from decoded answers: it would mangle ordinary words and field names. Text (messages,
errors) is redacted whatever the length."""


class Secret:
    """A value that never shows itself: not in repr, str, logs or messages."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself, for the one header or form field it is meant for."""
        return self._value

    def forms(self) -> set[str]:
        """The forms it can take in an answer: as it is, JSON-escaped (``\\/`` for
        ``/``), percent-encoded (in an echoed URL, query or form)."""
        value = self._value
        return {
            value,
            value.replace("/", "\\/"),
            quote(value, safe=""),
            quote(value),
            quote(value, safe="").replace("%20", "+"),
        }

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return f"{type(self).__name__}('***')"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError(f"a {type(self).__name__} cannot be pickled")


class Token(Secret):
    """A Bearer token: one word of printable ASCII (httpx would refuse anything else in
    a header, and quote it in the error)."""

    __slots__ = ()

    def __init__(self, value: str, *, where: str = "the API token") -> None:
        value = value.strip()
        if not value:
            raise ConfigError(f"{where} is empty")
        if not is_token_text(value):
            raise ConfigError(
                f"{where} contains spaces, line breaks or non-ASCII characters; "
                "a Bearer token is one line of printable ASCII"
            )
        super().__init__(value)


class Redactor:
    """Every secret the process has held, and the text and answers cleaned of them."""

    __slots__ = ("_forms", "_known", "_long")

    def __init__(self, secrets: Iterable[Secret] = ()) -> None:
        self._known: set[str] = set()
        self._forms: list[str] = []  # longest first: a secret inside another goes last
        self._long: list[str] = []  # the forms of secrets long enough to scrub
        for secret in secrets:
            self.add(secret)

    def add(self, secret: Secret) -> None:
        """From now on, ``secret`` is redacted everywhere."""
        value = secret.reveal()
        if not value or value in self._known:
            return
        self._known.add(value)
        forms = secret.forms() - set(self._forms)
        self._forms = sorted({*self._forms, *forms}, key=len, reverse=True)
        if len(value) >= MIN_SCRUBBED:
            self._long = sorted({*self._long, *forms}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        """``text`` with every known secret, in any of its forms, replaced by ``***``."""
        for form in self._forms:
            if form in text:
                text = text.replace(form, "***")
        return text

    def scrub(self, value: Any) -> Any:
        """A decoded JSON answer with every secret redacted from every string, keys
        included: what the API sends back is printed, reported and journaled. (Nesting
        too deep to walk raises RecursionError: a malformed answer.)"""
        if not self._long:
            return value
        return self._scrub(value)

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            for form in self._long:
                if form in value:
                    value = value.replace(form, "***")
            return value
        if isinstance(value, list):
            return [self._scrub(item) for item in value]
        if isinstance(value, Mapping):
            return {self._scrub(str(k)): self._scrub(v) for k, v in value.items()}
        return value

    def __repr__(self) -> str:
        return f"Redactor({len(self._known)} secrets)"
