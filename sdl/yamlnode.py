"""Safe YAML reading: text -> a tree of located nodes, resolved the way Go's yaml.v3 resolves them.

Akash's reference parser decodes SDL with gopkg.in/yaml.v3 (YAML 1.2 core schema: ``yes`` is a string,
``0x1f`` an integer). PyYAML resolves YAML 1.1, so we take only its event stream (libyaml's C parser
when present: iterative, no recursion) and build and resolve the nodes ourselves. Nothing is ever
constructed into Python objects by a YAML library, so no tag can run code. Nesting depth, total node
count and alias expansion are bounded, so hostile input fails with a located error instead of
exhausting the stack or memory.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Literal

import yaml

from sdl.errors import Problem

MAX_DEPTH = 200
MAX_NODES = 200_000
MAX_BYTES = 4 * 1024 * 1024

Kind = Literal["scalar", "mapping", "sequence"]

# Short tags as yaml.v3 names them.
NULL, BOOL, INT, FLOAT, STR, TIMESTAMP, MERGE = (
    "!!null",
    "!!bool",
    "!!int",
    "!!float",
    "!!str",
    "!!timestamp",
    "!!merge",
)

_FLOAT_RE = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
_TIMESTAMP_RE = re.compile(r"^\d{4}-\d{1,2}-\d{1,2}([Tt ]|$)")
_NULLS = frozenset({"", "~", "null", "Null", "NULL"})
_TRUES = frozenset({"true", "True", "TRUE"})
_FALSES = frozenset({"false", "False", "FALSE"})
_INFS = frozenset({".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF"})
_NEG_INFS = frozenset({"-.inf", "-.Inf", "-.INF"})
_NANS = frozenset({".nan", ".NaN", ".NAN"})


@dataclass(slots=True, eq=False)
class Node:
    """A YAML node with its 1-based position. ``value`` holds a scalar's text exactly as written."""

    kind: Kind
    line: int
    column: int
    tag: str = STR
    value: str = ""
    resolved: object = None
    items: list[tuple[Node, Node]] = field(default_factory=list)  # mapping entries, in order
    children: list[Node] = field(default_factory=list)  # sequence entries

    @property
    def is_null(self) -> bool:
        return self.kind == "scalar" and self.tag == NULL

    def describe(self) -> str:
        """How a tenant would name this node's type in an error message."""
        if self.kind == "mapping":
            return "a mapping"
        if self.kind == "sequence":
            return "a list"
        if self.tag == NULL:
            return "null"
        return f"{self.value!r}"


def _go_parse_int(text: str) -> int | None:
    """strconv.ParseInt/ParseUint with base 0, as yaml.v3 calls them (underscores already removed)."""
    sign = 1
    body = text
    if body[:1] in "+-":
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    if not body:
        return None
    lower = body.lower()
    try:
        if lower.startswith("0x"):
            value = int(body[2:], 16) if body[2:] else None
        elif lower.startswith("0o"):
            value = int(body[2:], 8) if body[2:] else None
        elif lower.startswith("0b"):
            value = int(body[2:], 2) if body[2:] else None
        elif len(body) > 1 and body[0] == "0":
            value = int(body[1:], 8)
        elif body.isdigit() and body.isascii():
            value = int(body)
        else:
            value = None
    except ValueError:
        return None
    if value is None:
        return None
    value *= sign
    if -(2**63) <= value < 2**64:
        return value
    return None


def resolve_plain(text: str) -> tuple[str, object]:
    """The tag and value yaml.v3 gives an untagged plain scalar."""
    if text in _NULLS:
        return NULL, None
    if text in _TRUES:
        return BOOL, True
    if text in _FALSES:
        return BOOL, False
    if text == "<<":
        return MERGE, text
    if text in _INFS:
        return FLOAT, math.inf
    if text in _NEG_INFS:
        return FLOAT, -math.inf
    if text in _NANS:
        return FLOAT, math.nan
    first = text[0]
    if first.isdigit() or first in "+-.":
        if _TIMESTAMP_RE.match(text):
            return TIMESTAMP, text
        plain = text.replace("_", "")
        if plain and all(c.isascii() for c in plain):
            as_int = _go_parse_int(plain)
            if as_int is not None and not (plain[:1] in "+-" and plain[1:2] == ""):
                return INT, as_int
            if _FLOAT_RE.match(plain):
                return FLOAT, float(plain)
    return STR, text


class _Composer:
    """Builds Nodes from a YAML event stream without recursion."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        self.anchors: dict[str, Node] = {}
        self.count = 0

    def fail(self, line: int, column: int, message: str) -> None:
        self.problems.append(Problem("", line, column, message))

    def compose(self, loader: yaml.BaseLoader) -> Node | None:
        stack: list[tuple[Node, str | None, list[Node]]] = []  # (container, anchor, pending key)
        root: Node | None = None
        document_seen = False
        while loader.check_event():
            event = loader.get_event()  # type: ignore[no-untyped-call]
            if isinstance(event, yaml.DocumentStartEvent):
                if document_seen:
                    break  # like yaml.v3's Unmarshal: only the first document counts
                document_seen = True
                continue
            if isinstance(event, (yaml.StreamStartEvent, yaml.StreamEndEvent, yaml.DocumentEndEvent)):
                if isinstance(event, yaml.DocumentEndEvent):
                    break
                continue
            mark = event.start_mark
            line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
            node: Node | None = None
            if isinstance(event, yaml.AliasEvent):
                target = self.anchors.get(event.anchor or "")
                if target is None:
                    self.fail(line, column, f"unknown anchor {event.anchor!r} referenced")
                    return None
                node = target
            elif isinstance(event, yaml.ScalarEvent):
                node = self._scalar(event, line, column)
            elif isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                kind: Kind = "mapping" if isinstance(event, yaml.MappingStartEvent) else "sequence"
                if len(stack) >= MAX_DEPTH:
                    self.fail(line, column, f"nesting deeper than {MAX_DEPTH} levels; an SDL is never this deep")
                    return None
                container = Node(kind, line, column, tag="!!map" if kind == "mapping" else "!!seq")
                self._count(line, column)
                stack.append((container, event.anchor, []))
                continue
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                node, anchor, _ = stack.pop()
                if anchor:
                    self.anchors[anchor] = node
            if node is None:
                if self.problems:
                    return None
                continue
            if not stack:
                root = node
                continue
            parent, _, pending = stack[-1]
            if parent.kind == "sequence":
                parent.children.append(node)
            elif pending:
                parent.items.append((pending.pop(), node))
            else:
                pending.append(node)
        return root

    def _count(self, line: int, column: int) -> None:
        self.count += 1
        if self.count > MAX_NODES:
            raise _TooBigError(line, column)

    def _scalar(self, event: yaml.ScalarEvent, line: int, column: int) -> Node:
        self._count(line, column)
        text = event.value
        explicit = event.tag if event.tag not in (None, "!") else None
        if explicit is not None:
            tag = explicit.replace("tag:yaml.org,2002:", "!!")
            resolved: object = text
            if tag in (INT, FLOAT, BOOL, NULL):
                tag, resolved = resolve_plain(text)
        elif event.style in (None, "") and event.implicit[0]:
            tag, resolved = resolve_plain(text)
        else:
            tag, resolved = STR, text
        node = Node("scalar", line, column, tag=tag, value=text, resolved=resolved)
        if event.anchor:
            self.anchors[event.anchor] = node
        return node


class _TooBigError(Exception):
    def __init__(self, line: int, column: int) -> None:
        super().__init__()
        self.line, self.column = line, column


_Loader: type[yaml.BaseLoader] = getattr(yaml, "CBaseLoader", yaml.BaseLoader)


def load(text: str | bytes) -> tuple[Node | None, list[Problem]]:
    """Parse the first YAML document of ``text``. Returns the root node (None for an empty document)
    and the problems found; never raises."""
    problems: list[Problem] = []
    if isinstance(text, bytes):
        if len(text) > MAX_BYTES:
            return None, [Problem("", 1, 1, f"file is larger than {MAX_BYTES // (1024 * 1024)} MiB")]
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            return None, [Problem("", 1, e.start + 1, f"not UTF-8 text (byte offset {e.start}); save it as UTF-8")]
    if len(text) > MAX_BYTES:
        return None, [Problem("", 1, 1, f"file is larger than {MAX_BYTES // (1024 * 1024)} MiB")]
    if "\x00" in text:
        offset = text.index("\x00")
        line = text.count("\n", 0, offset) + 1
        return None, [Problem("", line, 1, "contains a NUL byte; this is binary data, not YAML")]
    composer = _Composer(problems)
    loader = _Loader(text)
    try:
        root = composer.compose(loader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        what = e.problem or str(e)
        context = f" ({e.context})" if e.context else ""
        return None, [Problem("", line, column, f"invalid YAML: {what}{context}")]
    except yaml.reader.ReaderError as e:
        line = text.count("\n", 0, e.position) + 1
        column = e.position - (text.rfind("\n", 0, e.position) + 1) + 1
        what = f"character {e.character!r}" if isinstance(e.character, str) else f"byte {e.character!r}"
        return None, [Problem("", line, column, f"invalid YAML: {what} is not allowed ({e.reason})")]
    except yaml.YAMLError as e:
        return None, [Problem("", 1, 1, f"invalid YAML: {e}")]
    except _TooBigError as e:
        return None, [Problem("", e.line, e.column, f"more than {MAX_NODES} YAML nodes; refusing to read it")]
    finally:
        dispose = getattr(loader, "dispose", None)
        if dispose is not None:
            dispose()
    if problems:
        return None, problems
    return root, problems
