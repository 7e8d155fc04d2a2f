"""Safe, line-aware YAML for runbook's input files (plans and sandbox scenarios).

The file is *composed* (libyaml's C parser when present) into nodes that keep their
line and column, then built into plain Python data by hand so that:

- only plain data comes out (no Python tags, no custom tags);
- a key given twice in one mapping is a problem at the second key, at every level;
- aliases are shared, never copied, and the nodes they add are counted: a "billion
  laughs" file is refused after a bounded amount of work;
- every problem has a place: :meth:`Document.problem` maps a path of keys and indices
  back to the node it names, lazily, so valid files pay nothing for it.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from runbook.errors import Problem

try:
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeLoader as _BaseLoader  # type: ignore[assignment]

__all__ = ["Document", "Source", "YamlPath", "load", "read_source"]

MAX_BYTES = 64 * 1024 * 1024
"""The largest input file read; a 50,000-step plan is about 3 MiB."""
MAX_DEPTH = 64
"""Deepest nesting accepted; runbook's files nest five levels at most."""
ALIAS_BUDGET = 100_000
"""How many nodes aliases may add to a document in all, beyond the nodes written."""

YamlPath = tuple[Any, ...]

_TAG = "tag:yaml.org,2002:"
_PLAIN_SCALARS = {
    _TAG + "int": "construct_yaml_int",
    _TAG + "float": "construct_yaml_float",
    _TAG + "bool": "construct_yaml_bool",
    _TAG + "null": "construct_yaml_null",
}
_AS_TEXT = {_TAG + "str", _TAG + "timestamp", _TAG + "value"}
_MERGE = _TAG + "merge"
_STR = _TAG + "str"
_INT = _TAG + "int"


@dataclass(frozen=True, slots=True)
class Source:
    """An input file's text, the name its problems are shown under, and its hash."""

    name: str
    text: str
    sha256: str


def read_source(path: str | os.PathLike[str]) -> Source | Problem:
    """Read a UTF-8 file; return a :class:`Problem` instead if it cannot be read as one.

    A directory, a FIFO or a device is refused before it is opened: opening a FIFO
    would block until a writer comes.
    """
    name = os.fspath(path)
    try:
        info = os.stat(name)
    except OSError as exc:
        return Problem(name, 1, 1, f"cannot read the file: {exc.strerror or exc}")
    if stat.S_ISDIR(info.st_mode):
        return Problem(name, 1, 1, "is a directory, not a YAML file")
    if not stat.S_ISREG(info.st_mode):
        return Problem(name, 1, 1, "is not a regular file (a FIFO, socket or device?)")
    if info.st_size > MAX_BYTES:
        return Problem(name, 1, 1, f"is {info.st_size} bytes; the limit is {MAX_BYTES}")
    try:
        with open(name, "rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        return Problem(name, 1, 1, f"cannot read the file: {exc.strerror or exc}")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        column = len(before) - (before.rfind(b"\n") + 1) + 1
        return Problem(
            name, line, column, f"is not UTF-8: byte 0x{raw[exc.start]:02x} cannot be decoded"
        )
    return Source(name=name, text=text, sha256=hashlib.sha256(raw).hexdigest())


class Document:
    """Plain data built from a YAML file, able to point back at its nodes."""

    def __init__(self, source: Source, root: Node | None, data: Any) -> None:
        self.source = source
        self.root = root
        self.data = data

    def problem(self, path: YamlPath, message: str, *, key: bool = False) -> Problem:
        """A problem at the node ``path`` names (its key's node with ``key=True``).

        Where the path leaves the document (a missing key), the deepest node reached is
        used: the mapping that lacks the key.
        """
        node = self.root
        if node is None:
            return Problem(self.source.name, 1, 1, message)
        for index, part in enumerate(path):
            want_key = key and index == len(path) - 1
            child = _child(node, part, want_key)
            if child is None:
                break
            node = child
        mark = node.start_mark
        return Problem(self.source.name, mark.line + 1, mark.column + 1, message)


_BOOL = "tag:yaml.org,2002:bool"
_STR = "tag:yaml.org,2002:str"
_BOOLEANS = frozenset({"true", "True", "TRUE", "false", "False", "FALSE"})
"""YAML 1.2's booleans. PyYAML follows YAML 1.1, where ``on``, ``off``, ``yes`` and
``no`` are booleans too: a ``notify`` entry's ``on:`` key would read as True."""


class _Loader(_BaseLoader):
    """The safe loader, remembering how each plain scalar resolved.

    A plan repeats the same keys and names thousands of times; resolving a scalar runs
    a chain of regular expressions, which was a fifth of the load time. The safe loader
    has no path resolvers, so a scalar's tag depends only on its text and style.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._tags: dict[tuple[str, Any], str] = {}

    def resolve(self, kind: type[Node], value: Any, implicit: Any) -> str:
        if kind is not ScalarNode:
            return super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call,no-any-return]
        key = (value, implicit)
        tag = self._tags.get(key)
        if tag is None:
            tag = super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call]
            if tag == _BOOL and value not in _BOOLEANS:
                tag = _STR  # YAML 1.2: on, off, yes, no are text (notify's "on:" key)
            self._tags[key] = tag
        return tag


def load(source: Source) -> tuple[Document | None, list[Problem]]:
    """Compose and build ``source``; problems found on the way come back with the data.

    A syntax error ends the reading (``None`` comes back); duplicate keys, unsupported
    tags and the like are collected and the rest of the file is still read.
    """
    try:
        root = yaml.compose(source.text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        return None, [_syntax_problem(source, exc)]
    except yaml.reader.ReaderError as exc:  # a position, not a mark
        before = source.text[: exc.position]
        line = before.count("\n") + 1
        column = exc.position - (before.rfind("\n") + 1) + 1
        character = exc.character if isinstance(exc.character, str) else chr(exc.character)
        message = f"YAML error: the character U+{ord(character):04X} is not allowed in YAML"
        return None, [Problem(source.name, line, column, message)]
    except yaml.YAMLError as exc:
        return None, [Problem(source.name, 1, 1, f"YAML error: {_one_line(exc)}")]
    except RecursionError:  # only the pure-Python parser recurses; libyaml stops at 1000
        return None, [Problem(source.name, 1, 1, "YAML error: nested too deeply")]
    builder = _Builder(source.name)
    if root is None:
        return Document(source, None, None), []
    data = builder.build(root, 0)
    if builder.refused:  # the data is too large to walk: nothing more may look at it
        return None, builder.problems
    return Document(source, root, data), builder.problems


def _syntax_problem(source: Source, exc: yaml.MarkedYAMLError) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    message = f"YAML syntax error: {exc.problem or exc.context or 'unreadable'}"
    if exc.context and exc.problem and exc.context_mark is not None:
        message += f" ({exc.context} at line {exc.context_mark.line + 1})"
    if mark is not None and source.text[mark.index : mark.index + 1] == "\t":
        message += "; YAML does not allow tabs for indentation"
    return Problem(source.name, line, column, message)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


class _Builder:
    def __init__(self, name: str) -> None:
        self.name = name
        self.problems: list[Problem] = []
        self.built: dict[int, Any] = {}  # id(collection node) -> its value, for aliases
        self.sizes: dict[int, int] = {}
        self.active: set[int] = set()
        self.alias_nodes = 0
        self.refused = False
        self.constructor = SafeConstructor()

    def report(self, node: Node, message: str) -> None:
        mark = node.start_mark
        self.problems.append(Problem(self.name, mark.line + 1, mark.column + 1, message))

    def build(self, node: Node, depth: int) -> Any:
        if isinstance(node, ScalarNode):
            return self.scalar(node)
        ident = id(node)
        if ident in self.built:  # an alias: share the value, count what it adds
            self.alias_nodes += self.size_of(node)
            if self.alias_nodes > ALIAS_BUDGET and not self.refused:
                self.refused = True
                self.report(
                    node,
                    f"aliases expand to more than {ALIAS_BUDGET} nodes; "
                    "refusing to expand them (a YAML alias bomb?)",
                )
            return self.built[ident]
        if ident in self.active:
            self.report(node, "an alias refers to a node that contains it (recursive alias)")
            return None
        if depth > MAX_DEPTH:
            self.report(node, f"nested more than {MAX_DEPTH} levels deep")
            self.built[ident], self.sizes[ident] = None, 1
            return None
        if node.tag not in (_TAG + "seq", _TAG + "map"):
            self.report(node, _unsupported(node.tag))
        self.active.add(ident)
        if isinstance(node, SequenceNode):
            value: Any = [self.build(child, depth + 1) for child in node.value]
        else:
            assert isinstance(node, MappingNode)
            value = self.mapping(node, depth)
        self.active.discard(ident)
        self.built[ident] = value
        return value

    def size_of(self, node: Node) -> int:
        """How many nodes ``node`` stands for, aliases expanded (memoized: linear)."""
        ident = id(node)
        size = self.sizes.get(ident)
        if size is None:
            if isinstance(node, ScalarNode) or ident not in self.built:
                size = 1  # a scalar, or a node refused (too deep, recursive)
            elif isinstance(node, SequenceNode):
                size = 1 + sum(self.size_of(child) for child in node.value)
            else:
                size = 1 + sum(self.size_of(k) + self.size_of(v) for k, v in node.value)
            self.sizes[ident] = size
        return size

    def mapping(self, node: MappingNode, depth: int) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        first_seen: dict[Any, Node] = {}
        merges: list[Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                merges.extend(_merge_sources(value_node))
                continue
            if not isinstance(key_node, ScalarNode):
                self.report(key_node, "a key must be a plain value, not a list or a mapping")
                continue
            key = self.scalar(key_node)
            if key in first_seen:
                line = first_seen[key].start_mark.line + 1
                self.report(key_node, f"duplicate key {key!r} (first given at line {line})")
                continue
            first_seen[key] = key_node
            result[key] = self.build(value_node, depth + 1)
        for source_node in merges:
            if not isinstance(source_node, MappingNode):
                self.report(source_node, "a merge key (<<) takes a mapping or a list of mappings")
                continue
            merged = self.build(source_node, depth + 1)
            for key, value in merged.items():
                result.setdefault(key, value)
        return result

    def scalar(self, node: ScalarNode) -> Any:
        tag = node.tag
        if tag == _STR:
            return node.value
        text = node.value
        if tag == _INT and len(text) < 19 and text.isdigit() and (text[0] != "0" or text == "0"):
            return int(text)  # the common case; "017" is octal in YAML 1.1, left to PyYAML
        if tag in _AS_TEXT:
            return node.value  # timestamps stay text: no plan field is a date
        method = _PLAIN_SCALARS.get(tag)
        if method is None:
            self.report(node, _unsupported(tag))
            return node.value
        try:
            return getattr(self.constructor, method)(node)
        except (ValueError, ConstructorError) as exc:  # e.g. an integer of 10,000 digits
            self.report(node, f"cannot read {node.value[:40]!r}: {_one_line(exc)}")
            return None


def _merge_sources(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    return [node]


def _unsupported(tag: str) -> str:
    short = "!!" + tag[len(_TAG) :] if tag.startswith(_TAG) else tag
    return f"unsupported YAML tag {short}: only plain data is allowed"


def _pairs(node: MappingNode) -> Iterator[tuple[Node, Node]]:
    """Explicit pairs first, then merged ones: the order in which keys win."""
    merges: list[Node] = []
    for key_node, value_node in node.value:
        if key_node.tag == _MERGE:
            merges.extend(_merge_sources(value_node))
        else:
            yield key_node, value_node
    for source in merges:
        if isinstance(source, MappingNode):
            yield from _pairs(source)


_LOOKUP = SafeConstructor()


def _key_value(node: Node) -> Any:
    if not isinstance(node, ScalarNode):
        return object()
    if node.tag in _AS_TEXT:
        return node.value
    method = _PLAIN_SCALARS.get(node.tag)
    try:
        return getattr(_LOOKUP, method)(node) if method else node.value
    except (ValueError, ConstructorError):
        return node.value


def _child(node: Node, part: Any, want_key: bool) -> Node | None:
    if isinstance(node, MappingNode):
        for key_node, value_node in _pairs(node):
            key = _key_value(key_node)
            if key == part and type(key) is type(part):
                return key_node if want_key else value_node
        return None
    if isinstance(node, SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
        child: Node = node.value[part]
        return child
    return None
