"""Small wording helpers shared by messages: hints, plurals, the API's messages."""

from __future__ import annotations

import difflib
import json
import shlex
import sys
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

__all__ = [
    "NAME_CUTOFF",
    "did_you_mean",
    "is_token_text",
    "message_texts",
    "plural",
    "printable",
    "quoted_list",
    "shell_word",
]

_READS_Z = sys.version_info >= (3, 11)
"""Whether ``datetime.fromisoformat`` reads a final ``Z`` (and ISO 8601 at large)."""


def is_token_text(text: str) -> bool:
    """One word of printable ASCII: what a Bearer token (and an HTTP header) may hold."""
    return bool(text) and all(0x21 <= ord(c) <= 0x7E for c in text)


NAME_CUTOFF = 0.8
"""How close a name must be to be suggested for a step name: names share prefixes
(``extract_``), so what only shares one (``extract_customers``, ``extract_orders``) is
another step, not a typo. Letters swapped (``jion``, ``join``) are one, however short."""


def did_you_mean(word: object, choices: Iterable[str], *, cutoff: float = 0.6) -> str:
    """``"; did you mean 'x'?"`` when a choice is close to ``word``, else ``""``; with
    a ``cutoff`` above 0.6, a choice of the same letters in another order is close too."""
    if not isinstance(word, str):
        return ""
    options = list(choices)
    close = difflib.get_close_matches(word, options, n=1, cutoff=cutoff)
    if not close and cutoff > 0.6:
        close = [o for o in options if sorted(o) == sorted(word) and o != word][:1]
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
    """``text`` safe for a terminal: control, format and other unprintable characters
    escaped (``\\x1b``, ``\\u202e``), so that an API's message can neither break a line
    nor send escape codes. A byte of a path that was not UTF-8 (Python holds it as a lone
    surrogate) is shown as the byte, ``\\xff``."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escaped(c) for c in text)


def _escaped(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's surrogateescape of one byte
        return f"\\x{code - 0xDC00:02x}"
    return char.encode("unicode_escape").decode()


def shell_word(text: str) -> str:
    """``text`` as one word a POSIX shell reads back as the same bytes: quoted as
    :func:`shlex.quote` does, or, when it holds anything unprintable (a control
    character, a byte that is not UTF-8), in bash's ``$'...'`` with those bytes escaped,
    so that the word can be pasted and shows what it holds."""
    if text.isprintable():
        return shlex.quote(text)
    out = []
    for char in text:
        if char in "\\'":
            out.append("\\" + char)
        elif char.isprintable():
            out.append(char)
        else:
            try:
                raw = char.encode("utf-8", "surrogateescape")
            except UnicodeEncodeError:  # a lone surrogate that stands for no byte
                raw = char.encode("utf-8", "surrogatepass")
            out.append("".join(f"\\x{byte:02x}" for byte in raw))
    return "$'" + "".join(out) + "'"


def parse_timestamp(text: str | None) -> datetime | None:
    """ISO 8601 to an aware datetime (naive means UTC); None if it cannot be read."""
    if not text:
        return None
    if _READS_Z:  # the common case read as it is: Python 3.11 reads a final Z itself
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            pass
        else:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    candidate = text.strip()
    if candidate.endswith(("Z", "z")):
        candidate = candidate[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(candidate)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
