"""Decode resource documents into frozen dataclasses, guided by the dataclasses themselves.

The resource types in `resources` declare their wire names and which fields are required in
field metadata; this module reads those declarations to decode YAML/JSON documents with
errors that name the exact field (`spec.auth.secretRef.name`). Because the declarations
are data, the CRD schema generator reads the same ones: the model is the one source of
truth for what a valid resource is.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar, get_args, get_origin

from connectors.api import timestamps
from connectors.api.errors import ManifestError

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Rule:
    """A check beyond a field's type, said twice in one place: `accepts` for the decoder,
    `cel` for the API server (the CRD's x-kubernetes-validations). `message` is all either
    says when the check fails; it never quotes the value, which may hold a secret."""

    accepts: Callable[[Any], bool]
    cel: str
    message: str


def wire(
    name: str,
    *,
    required: bool = False,
    description: str = "",
    rule: Rule | None = None,
    max_length: int | None = None,
) -> dict[str, Any]:
    """Field metadata: the field's name in documents, whether it must be present, any rule
    its value must also follow, and its longest length (characters of a string, items of a
    list; the API server needs it to bound what a rule may cost)."""
    return {
        "wire": name,
        "required": required,
        "description": description,
        "rule": rule,
        "max_length": max_length,
    }


def rule_of(field: dataclasses.Field[Any]) -> Rule | None:
    rule = field.metadata.get("rule")
    return rule if isinstance(rule, Rule) else None


def wire_name(field: dataclasses.Field[Any]) -> str:
    return str(field.metadata.get("wire", field.name))


def is_required(field: dataclasses.Field[Any]) -> bool:
    return bool(field.metadata.get("required", False))


def field_types(cls: type[Any]) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def decode(cls: type[T], data: object, path: str = "") -> T:
    """Build `cls` from a mapping, raising ManifestError naming the first bad field."""
    if not isinstance(data, Mapping):
        raise ManifestError(f"expected a mapping, got {_kind(data)}", field=path or "(root)")
    hints = field_types(cls)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        name = wire_name(field)
        where = f"{path}.{name}" if path else name
        if name not in data or data[name] is None:
            if is_required(field):
                raise ManifestError("is required", field=where)
            continue
        value = _decode_value(hints[field.name], data[name], where)
        longest = field.metadata.get("max_length")
        if longest is not None and len(value) > longest:
            raise ManifestError(f"is longer than {longest}", field=where)
        rule = rule_of(field)
        if rule is not None and not rule.accepts(value):
            raise ManifestError(rule.message, field=where)
        values[field.name] = value
    return cls(**values)


def _decode_value(hint: Any, value: object, path: str) -> Any:
    origin = get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in get_args(hint) if a is not type(None)]
        return _decode_value(inner[0], value, path)
    if origin is tuple:
        if not isinstance(value, list):
            raise ManifestError(f"expected a list, got {_kind(value)}", field=path)
        item = get_args(hint)[0]
        return tuple(_decode_value(item, v, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is dict or hint is Mapping or origin is Mapping:
        if not isinstance(value, Mapping):
            raise ManifestError(f"expected a mapping, got {_kind(value)}", field=path)
        val_hint = get_args(hint)[1] if get_args(hint) else str
        return {str(k): _decode_value(val_hint, v, f"{path}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        return decode(typing.cast(type[Any], hint), value, path)
    return _decode_scalar(hint, value, path)


def _decode_scalar(hint: Any, value: object, path: str) -> Any:
    if hint is Any:
        return value
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint(value)
        except ValueError:
            allowed = ", ".join(str(m.value) for m in hint)
            raise ManifestError(f"expected one of {allowed}", field=path) from None
    if hint is datetime:
        if isinstance(value, datetime):
            return value
        try:
            return timestamps.parse(str(value))
        except ValueError:
            raise ManifestError("expected a time like 2026-01-31T12:00:00Z", field=path) from None
    if hint is bool:
        if not isinstance(value, bool):
            raise ManifestError(f"expected true or false, got {_kind(value)}", field=path)
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ManifestError(f"expected an integer, got {_kind(value)}", field=path)
        return value
    if hint is str:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ManifestError(f"expected a string, got {_kind(value)}", field=path)
        # YAML turns `value: 8080` into an int; a string field takes it as written.
        return str(value)
    raise TypeError(f"codec cannot decode {hint!r} at {path}")


def encode(obj: object) -> Any:
    """The document form of a dataclass (wire names, empty values left out)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {}
        for field in dataclasses.fields(obj):
            value = getattr(obj, field.name)
            if value is None or value in ((), {}):
                continue
            out[wire_name(field)] = encode(value)
        return out
    if isinstance(obj, tuple | list):
        return [encode(v) for v in obj]
    if isinstance(obj, Mapping):
        return {k: encode(v) for k, v in obj.items()}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, datetime):
        return timestamps.format_time(obj)
    return obj


def _kind(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "a mapping"
    return type(value).__name__
