"""Small wording helpers shared by messages: hints, plurals, the API's messages."""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

__all__ = [
    "did_you_mean",
    "is_token_text",
    "message_texts",
    "plural",
    "printable",
    "quoted_list",
]


def is_token_text(text: str) -> bool:
    """One word of printable ASCII: what a Bearer token (and an HTTP header) may hold."""
    return bool(text) and all(0x21 <= ord(c) <= 0x7E for c in text)


def did_you_mean(word: object, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` when a choice is close to ``word``, else ``""``."""
    if not isinstance(word, str):
        return ""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """``"1 workflow"``, ``"2 workflows"``, ``"1 dependency"``, ``"3 dependencies"``."""
    if count == 1:
        return f"{count} {singular}"
    if plural_form is None:
        plural_form = singular[:-1] + "ies" if singular.endswith("y") else singular + "s"
    return f"{count} {plural_form}"


def quoted_list(items: Iterable[object]) -> str:
    """``'a', 'b', 'c'``"""
    return ", ".join(f"'{item}'" for item in items)


def message_texts(value: Any) -> tuple[str, ...]:
    """Errors or warnings as text, whether strings, objects or absent."""
    if value is None:
        return ()
    items = value if isinstance(value, list) else [value]
    texts = []
    for item in items:
        if isinstance(item, str):
            texts.append(printable(item))
        elif isinstance(item, dict) and isinstance(item.get("message"), str):
            code = item.get("code")
            message = f"{code}: {item['message']}" if code is not None else item["message"]
            texts.append(printable(message))
        else:
            texts.append(json.dumps(item, sort_keys=True, default=str))
    return tuple(texts)


def printable(text: str) -> str:
    """``text`` safe for a terminal: control and other unprintable characters escaped
    (``\\x1b``), so that an API's message can neither break a line nor send escape codes."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def parse_timestamp(text: str | None) -> datetime | None:
    """ISO 8601 to an aware datetime (naive means UTC); None if it cannot be read."""
    if not text:
        return None
    candidate = text.strip()
    if candidate.endswith(("Z", "z")):
        candidate = candidate[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(candidate)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
