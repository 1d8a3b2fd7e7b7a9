"""The configuration reference (docs/operator/configuration-reference.md), generated from the settings
models in provider.config: every key with its type, default, limits and the comment written beside it in
the code, so the reference can never drift from what the daemon accepts.

    python -m provider.config_reference > docs/operator/configuration-reference.md
"""

from __future__ import annotations

import inspect
import io
import json
import tokenize
import types
import typing
from pathlib import Path
from typing import Any, Literal

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from provider.config import Config, _address, _money, _path, _size
from provider.money import Dec

_VALIDATED = {_money: "amount", _size: "size", _address: "HOST:PORT", _path: "path"}
HEADER = """# Configuration reference

Generated from the settings models (`python -m provider.config_reference`); a test keeps it current.
`docs/configuration.md` explains the settings by topic. Types: *amount* is an exact decimal (a YAML number
or quoted text, 18 decimals at most); *size* is bytes or a number with Ki, Mi, Gi, Ti or Pi; *path* may
start with `~`. An unknown key, a wrong type or a value out of range stops the daemon at start with the
key's path.
"""


def _comments(cls: type[BaseModel]) -> dict[str, str]:
    """The comment at the end of each field's line in the class body (``name: type = x  # comment``)."""
    out: dict[str, str] = {}
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return out
    line_field: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.NAME and tok.start[1] == 4 and tok.start[0] not in line_field:
            line_field[tok.start[0]] = tok.string
        elif tok.type == tokenize.COMMENT and tok.start[0] in line_field:
            out.setdefault(line_field[tok.start[0]], tok.string.lstrip("#").strip())
    return out


def _type(annotation: Any, metadata: list[Any] | None = None) -> str:
    for m in metadata or []:
        fn = getattr(m, "func", None)
        if fn in _VALIDATED:
            return _VALIDATED[fn]
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type(args[0], list(args[1:]))
    if origin is Literal:
        return " \\| ".join(json.dumps(a) for a in args)
    if origin in (types.UnionType, typing.Union):
        named = [_type(a) for a in args if a is not type(None)]
        return " or ".join(named) + (" or null" if type(None) in args else "")
    if origin is list:
        return f"list of {_type(args[0])}"
    if origin is dict:
        return f"map of {_type(args[1])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    return {str: "string", int: "integer", float: "number", bool: "boolean", Path: "path", Dec: "amount"}.get(
        annotation, getattr(annotation, "__name__", str(annotation))
    )


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return {k: _plain(v) for k, v in value.model_dump().items()}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        home = str(Path.home())
        text = str(value)
        return "~" + text[len(home) :] if text.startswith(home) else text
    if isinstance(value, Dec):
        return str(value)
    return value


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = _plain(field.get_default(call_default_factory=True))
    return "`" + json.dumps(value, ensure_ascii=False) + "`"


def _limits(field: FieldInfo) -> str:
    parts = []
    for m in field.metadata:
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"), ("max_length", "length ≤")):
            if isinstance(m, getattr(annotated_types, {"max_length": "MaxLen"}.get(attr, attr.capitalize()))):
                parts.append(f"{sign} {getattr(m, attr)}")
        pattern = getattr(m, "pattern", None)
        if pattern:
            parts.append(f"matches `{pattern}`")
    return ", ".join(parts)


def _rows(model: type[BaseModel], prefix: str) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    notes = _comments(model)
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows.extend(_rows(annotation, key + "."))
            continue
        meaning = (field.description or notes.get(name, "")).replace("|", "\\|")
        rows.append((f"`{key}`", _type(annotation, field.metadata), _default(field), _limits(field), meaning))
    return rows


def reference() -> str:
    lines = [HEADER.rstrip("\n")]
    for name, field in Config.model_fields.items():
        section = field.annotation
        assert isinstance(section, type) and issubclass(section, BaseModel)
        lines += ["", f"## `{name}`", ""]
        if section.__doc__ and "BaseModel" not in section.__doc__:
            lines += [inspect.cleandoc(section.__doc__).replace("\n", " "), ""]
        lines += ["| key | type | default | limits | meaning |", "|---|---|---|---|---|"]
        lines += ["| " + " | ".join(row) + " |" for row in _rows(section, f"{name}.")]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(reference(), end="")
