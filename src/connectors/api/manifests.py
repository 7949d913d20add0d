"""Read Connector, ConnectorClass and Secret documents exactly as users write them.

Documents come from multi-document YAML (a file in standalone mode, or what the API server
returns). Every problem is reported as a ManifestError naming the file, the document's
position and the field, so a user can find the line to fix.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any, TypeVar

import yaml

from connectors.api import codec
from connectors.api.errors import ManifestError
from connectors.api.resources import (
    API_VERSION,
    ClassStatus,
    Connector,
    ConnectorClass,
    ConnectorClassSpec,
    ConnectorSpec,
    ConnectorStatus,
    ObjectMeta,
    Secret,
)

Resource = Connector | ConnectorClass | Secret
StatusT = TypeVar("StatusT", ConnectorStatus, ClassStatus)

_KINDS: dict[tuple[str, str], str] = {
    (API_VERSION, "Connector"): "Connector",
    (API_VERSION, "ConnectorClass"): "ConnectorClass",
    ("v1", "Secret"): "Secret",
}


def load_documents(text: str, *, source: str) -> Iterator[tuple[int, Any]]:
    """Yield (1-based position, document) for each non-empty YAML document in text."""
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ManifestError(f"not valid YAML{where}: {problem}", source=source) from exc
    position = 0
    for document in documents:
        if document is None:
            continue
        position += 1
        yield position, document


def parse(document: object, *, namespace: str | None = None) -> Resource | None:
    """The resource a document describes, or None for kinds connectors does not use.

    `namespace` is the namespace a document without one lands in (as `kubectl apply -n`).
    """
    if not isinstance(document, Mapping):
        raise ManifestError("a resource document must be a mapping", field="(root)")
    api_version = _required_str(document, "apiVersion")
    kind = _required_str(document, "kind")
    known = _KINDS.get((api_version, kind))
    if known is None:
        if kind in {"Connector", "ConnectorClass"} or (kind == "Secret"):
            raise ManifestError(
                f"{kind} must have apiVersion "
                f"{API_VERSION if kind != 'Secret' else 'v1'}, not {api_version!r}",
                field="apiVersion",
            )
        return None
    metadata = codec.decode(ObjectMeta, document.get("metadata"), "metadata")
    if known == "ConnectorClass":
        metadata = dataclasses.replace(metadata, namespace=None)
        spec = codec.decode(ConnectorClassSpec, document.get("spec"), "spec")
        status = _status(ClassStatus, document.get("status"), ClassStatus())
        return ConnectorClass(metadata=metadata, spec=spec, status=status)
    if metadata.namespace is None and namespace is not None:
        metadata = dataclasses.replace(metadata, namespace=namespace)
    if known == "Connector":
        return Connector(
            metadata=metadata,
            spec=codec.decode(ConnectorSpec, document.get("spec"), "spec"),
            status=_status(ConnectorStatus, document.get("status"), ConnectorStatus()),
        )
    return _parse_secret(document, metadata)


def _status(kind: type[StatusT], document: object, empty: StatusT) -> StatusT:
    """The status a controller wrote; one that cannot be read counts as none yet, since a
    reconcile pass rewrites it whole."""
    if not document:
        return empty
    try:
        return codec.decode(kind, document, "status")
    except ManifestError:
        return empty


def _parse_secret(document: Mapping[str, Any], metadata: ObjectMeta) -> Secret:
    secret_type = document.get("type", "Opaque")
    if not isinstance(secret_type, str):
        raise ManifestError("expected a string", field="type")
    data: dict[str, bytes] = {}
    raw = document.get("data") or {}
    if not isinstance(raw, Mapping):
        raise ManifestError("expected a mapping of base64 strings", field="data")
    for key, value in raw.items():
        try:
            data[str(key)] = base64.b64decode(str(value), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ManifestError("is not valid base64", field=f"data.{key}") from exc
    plain = document.get("stringData") or {}
    if not isinstance(plain, Mapping):
        raise ManifestError("expected a mapping of strings", field="stringData")
    for key, value in plain.items():
        if isinstance(value, Mapping | list) or value is None:
            raise ManifestError("expected a string", field=f"stringData.{key}")
        data[str(key)] = str(value).encode()
    return Secret(metadata=metadata, type=secret_type, data=data)


def _required_str(document: Mapping[str, Any], name: str) -> str:
    value = document.get(name)
    if value is None:
        raise ManifestError("is required", field=name)
    if not isinstance(value, str):
        raise ManifestError("expected a string", field=name)
    return value


def parse_text(text: str, *, source: str, namespace: str | None = None) -> list[Resource]:
    """Every resource in a multi-document YAML text; the first problem raises."""
    resources = []
    for position, document in load_documents(text, source=source):
        try:
            resource = parse(document, namespace=namespace)
        except ManifestError as exc:
            raise exc.located(source=source, document=position) from exc
        if resource is not None:
            resources.append(resource)
    return resources
