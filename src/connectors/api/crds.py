"""CustomResourceDefinitions for Connector and ConnectorClass, generated from the model.

The dataclasses in `resources` and `conditions` declare each field's wire name, type and
whether it is required; this module turns those declarations into structural OpenAPI v3
schemas, so the API server rejects exactly what the manifest reader rejects. The YAML under
`deploy/crds/` is this module's output (a test fails when the two drift apart); regenerate
it with `connectors install crds --print > deploy/crds/connectors.alauda.io.yaml`.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from datetime import datetime
from typing import Any, get_args, get_origin

import yaml

from connectors.api import codec
from connectors.api.resources import (
    GROUP,
    VERSION,
    ClassStatus,
    ConnectorClassSpec,
    ConnectorSpec,
    ConnectorStatus,
)

Schema = dict[str, Any]

_READY = '.status.conditions[?(@.type=="Ready")]'


def schema_of(hint: Any) -> Schema:
    """The OpenAPI v3 schema of a type the codec can decode."""
    origin = get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in get_args(hint) if a is not type(None)]
        return schema_of(inner[0])
    if origin is tuple:
        return {"type": "array", "items": schema_of(get_args(hint)[0])}
    if origin is dict:
        return {"type": "object", "additionalProperties": schema_of(get_args(hint)[1])}
    if dataclasses.is_dataclass(hint):
        return _object_schema(typing.cast(type[Any], hint))
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return {"type": "string", "enum": [member.value for member in hint]}
    if hint is datetime:
        return {"type": "string", "format": "date-time"}
    if hint is bool:
        return {"type": "boolean"}
    if hint is int:
        return {"type": "integer", "format": "int64"}
    if hint is str:
        return {"type": "string"}
    raise TypeError(f"no schema for {hint!r}")


def _object_schema(cls: type[Any]) -> Schema:
    hints = codec.field_types(cls)
    properties: dict[str, Schema] = {}
    required: list[str] = []
    for field in dataclasses.fields(cls):
        name = codec.wire_name(field)
        schema = schema_of(hints[field.name])
        description = field.metadata.get("description")
        if description:
            schema = {"description": description, **schema}
        longest = field.metadata.get("max_length")
        if longest is not None:
            schema["maxItems" if schema["type"] == "array" else "maxLength"] = longest
        rule = codec.rule_of(field)
        if rule is not None:
            # Forbidden, not Invalid: an Invalid answer would quote the value back.
            schema["x-kubernetes-validations"] = [
                {"rule": rule.cel, "message": rule.message, "reason": "FieldValueForbidden"}
            ]
        properties[name] = schema
        if codec.is_required(field):
            required.append(name)
    schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


def _status_schema(kind: type[Any] = ConnectorStatus) -> Schema:
    schema = schema_of(kind)
    # Conditions are a map keyed by type, so server-side apply merges them by type.
    schema["properties"]["conditions"].update(
        {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}
    )
    return schema


def _crd(
    kind: str,
    plural: str,
    scope: str,
    spec: Schema,
    *,
    status: Schema | None = None,
    columns: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    properties: dict[str, Schema] = {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": spec,
    }
    if status is not None:
        properties["status"] = status
    version: dict[str, Any] = {
        "name": VERSION,
        "served": True,
        "storage": True,
        "schema": {
            "openAPIV3Schema": {"type": "object", "required": ["spec"], "properties": properties}
        },
    }
    if status is not None:
        version["subresources"] = {"status": {}}
    if columns:
        version["additionalPrinterColumns"] = columns
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "categories": ["alauda"],  # Alauda's; "connectors" would shadow the resource name
            },
            "scope": scope,
            "versions": [version],
        },
    }


def connector_crd() -> dict[str, Any]:
    return _crd(
        "Connector",
        "connectors",
        "Namespaced",
        schema_of(ConnectorSpec),
        status=_status_schema(),
        columns=[
            {"name": "Class", "type": "string", "jsonPath": ".spec.connectorClassName"},
            {"name": "Address", "type": "string", "jsonPath": ".spec.address"},
            {"name": "Ready", "type": "string", "jsonPath": f"{_READY}.status"},
            {"name": "Reason", "type": "string", "jsonPath": f"{_READY}.reason"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    )


def connector_class_crd() -> dict[str, Any]:
    return _crd(
        "ConnectorClass",
        "connectorclasses",
        "Cluster",
        schema_of(ConnectorClassSpec),
        status=_status_schema(ClassStatus),
        columns=[
            {"name": "Ready", "type": "string", "jsonPath": f"{_READY}.status"},
            {"name": "Reason", "type": "string", "jsonPath": f"{_READY}.reason"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    )


def all_crds() -> list[dict[str, Any]]:
    return [connector_crd(), connector_class_crd()]


def crds_yaml() -> str:
    """Both CRDs as one multi-document YAML text, stable byte for byte."""
    header = (
        "# Generated by `connectors install crds --print` from src/connectors/api. Do not edit.\n"
    )
    return header + yaml.safe_dump_all(all_crds(), sort_keys=False, explicit_start=True)
