"""The resources of `connectors.alauda.io/v1alpha1`, and the Secret a Connector points at.

Field names follow the published Alauda Connectors CRDs so their manifests apply unchanged.
Each field's wire name and whether it is required live in its metadata (see `codec`), which
both the manifest reader and the CRD schema generator use.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from connectors.api import codec
from connectors.api.codec import Rule, wire
from connectors.api.conditions import Condition

GROUP = "connectors.alauda.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
DEFAULT_NAMESPACE = "default"
BASIC_AUTH_SECRET_TYPE = "kubernetes.io/basic-auth"


# --- shared pieces -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class NameValue:
    name: str = dataclasses.field(metadata=wire("name", required=True))
    value: str = dataclasses.field(default="", metadata=wire("value"))


@dataclasses.dataclass(frozen=True)
class LocalObjectReference:
    name: str = dataclasses.field(metadata=wire("name", required=True))


@dataclasses.dataclass(frozen=True)
class SecretReference:
    """`spec.auth.secretRef`: Alauda's schema makes it a full ObjectReference. Only `name`
    and `namespace` mean anything here, and the namespace must be the Connector's own
    (`registry/access.py` says so in SecretReady otherwise); the rest is accepted."""

    name: str = dataclasses.field(metadata=wire("name", required=True))
    namespace: str = dataclasses.field(default="", metadata=wire("namespace"))
    kind: str = dataclasses.field(default="", metadata=wire("kind"))
    api_version: str = dataclasses.field(default="", metadata=wire("apiVersion"))
    uid: str = dataclasses.field(default="", metadata=wire("uid"))
    resource_version: str = dataclasses.field(default="", metadata=wire("resourceVersion"))
    field_path: str = dataclasses.field(default="", metadata=wire("fieldPath"))


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    name: str = dataclasses.field(metadata=wire("name", required=True))
    type: str = dataclasses.field(default="string", metadata=wire("type"))
    description: str = dataclasses.field(default="", metadata=wire("description"))
    default: str | None = dataclasses.field(default=None, metadata=wire("default"))


@dataclasses.dataclass(frozen=True)
class ObjectMeta:
    name: str = dataclasses.field(metadata=wire("name", required=True))
    namespace: str | None = dataclasses.field(default=None, metadata=wire("namespace"))
    uid: str | None = dataclasses.field(default=None, metadata=wire("uid"))
    generation: int | None = dataclasses.field(default=None, metadata=wire("generation"))
    resource_version: str | None = dataclasses.field(default=None, metadata=wire("resourceVersion"))
    creation_timestamp: str | None = dataclasses.field(
        default=None, metadata=wire("creationTimestamp")
    )
    labels: dict[str, str] = dataclasses.field(default_factory=dict, metadata=wire("labels"))
    annotations: dict[str, str] = dataclasses.field(
        default_factory=dict, metadata=wire("annotations")
    )


# --- Connector -----------------------------------------------------------------------------

# `scheme://user:password@host`: credentials belong in the Secret, never in an address
# (which is shown in tables, statuses and logs). The same pattern in Python and in CEL (RE2).
_USERINFO = "^[^:/?#]*://[^/?#]*@"
_HAS_USERINFO = re.compile(_USERINFO)
_NO_CREDENTIALS = (
    "must not carry credentials (user:password@): put them in the Secret named by "
    "spec.auth.secretRef; this Connector is not served until then"
)
NO_CREDENTIALS_IN_ADDRESS = Rule(
    accepts=lambda address: not _HAS_USERINFO.match(address),
    cel=f"!self.matches('{_USERINFO}')",
    message=_NO_CREDENTIALS,
)
MAX_ADDRESS_LENGTH = 2048  # bounds the rule's cost on the API server
MAX_ADDRESS_EXTENSIONS = 32


@dataclasses.dataclass(frozen=True)
class AddressExtension:
    """Another upstream host the proxy takes over, by name (`/_ext/<name>/...`)."""

    name: str = dataclasses.field(metadata=wire("name", required=True))
    value: str = dataclasses.field(
        default="",
        metadata=wire("value", rule=NO_CREDENTIALS_IN_ADDRESS, max_length=MAX_ADDRESS_LENGTH),
    )


@dataclasses.dataclass(frozen=True)
class ConnectorAuth:
    name: str = dataclasses.field(default="", metadata=wire("name"))
    secret_ref: SecretReference | None = dataclasses.field(default=None, metadata=wire("secretRef"))
    params: tuple[NameValue, ...] = dataclasses.field(default=(), metadata=wire("params"))


@dataclasses.dataclass(frozen=True)
class ConnectorSpec:
    connector_class_name: str = dataclasses.field(
        metadata=wire(
            "connectorClassName",
            required=True,
            description="The ConnectorClass that says how to use this registry.",
        )
    )
    address: str = dataclasses.field(
        metadata=wire(
            "address",
            required=True,
            description="The registry's URL; may carry a path prefix.",
            rule=NO_CREDENTIALS_IN_ADDRESS,
            max_length=MAX_ADDRESS_LENGTH,
        )
    )
    address_extensions: tuple[AddressExtension, ...] = dataclasses.field(
        default=(),
        metadata=wire(
            "addressExtensions",
            description="Other upstream hosts the proxy also takes over.",
            max_length=MAX_ADDRESS_EXTENSIONS,
        ),
    )
    auth: ConnectorAuth | None = dataclasses.field(default=None, metadata=wire("auth"))
    params: tuple[NameValue, ...] = dataclasses.field(default=(), metadata=wire("params"))
    ca_cert_secret_ref: LocalObjectReference | None = dataclasses.field(
        default=None, metadata=wire("caCertSecretRef")
    )

    def param(self, name: str) -> str | None:
        return next((p.value for p in self.params if p.name == name), None)


@dataclasses.dataclass(frozen=True)
class HTTPAddress:
    url: str = dataclasses.field(metadata=wire("url", required=True))
    audience: str = dataclasses.field(default="", metadata=wire("audience"))


@dataclasses.dataclass(frozen=True)
class ProxyStatus:
    http_address: HTTPAddress | None = dataclasses.field(default=None, metadata=wire("httpAddress"))


@dataclasses.dataclass(frozen=True)
class ResourceStatus:
    """What a controller writes into a resource's `status`: conditions, and the generation
    they were computed for."""

    conditions: tuple[Condition, ...] = dataclasses.field(default=(), metadata=wire("conditions"))
    observed_generation: int | None = dataclasses.field(
        default=None, metadata=wire("observedGeneration")
    )

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)

    def to_dict(self) -> dict[str, Any]:
        """The document form written to the resource's `status`."""
        document: dict[str, Any] = {"conditions": [c.to_dict() for c in self.conditions]}
        if self.observed_generation is not None:
            document["observedGeneration"] = self.observed_generation
        return document


@dataclasses.dataclass(frozen=True)
class ConnectorStatus(ResourceStatus):
    proxy: ProxyStatus | None = dataclasses.field(default=None, metadata=wire("proxy"))

    def to_dict(self) -> dict[str, Any]:
        document = super().to_dict()
        if self.proxy is not None:
            document["proxy"] = codec.encode(self.proxy)
        return document


@dataclasses.dataclass(frozen=True)
class Connector:
    metadata: ObjectMeta
    spec: ConnectorSpec
    status: ConnectorStatus = ConnectorStatus()

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace or DEFAULT_NAMESPACE

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


# --- ConnectorClass ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ProbeResponse:
    cel: str = dataclasses.field(default="", metadata=wire("cel"))


@dataclasses.dataclass(frozen=True)
class HTTPProbe:
    """Alauda's probe. `host`, `scheme` and `response.cel` are accepted but not supported
    (the class's Ready condition says so); redirects are never followed, whatever
    `disableRedirect` says, so credentials never leave the connector's host."""

    path: str = dataclasses.field(default="/", metadata=wire("path"))
    method: str = dataclasses.field(default="GET", metadata=wire("method"))
    http_headers: tuple[NameValue, ...] = dataclasses.field(
        default=(), metadata=wire("httpHeaders")
    )
    host: str = dataclasses.field(default="", metadata=wire("host"))
    scheme: str = dataclasses.field(default="", metadata=wire("scheme"))
    disable_redirect: bool = dataclasses.field(default=False, metadata=wire("disableRedirect"))
    response: ProbeResponse | None = dataclasses.field(default=None, metadata=wire("response"))


@dataclasses.dataclass(frozen=True)
class Probe:
    http: HTTPProbe | None = dataclasses.field(default=None, metadata=wire("http"))


@dataclasses.dataclass(frozen=True)
class AuthProbe:
    auth_name: str = dataclasses.field(metadata=wire("authName", required=True))
    probe: Probe = dataclasses.field(metadata=wire("probe", required=True))
    params: tuple[ParamSpec, ...] = dataclasses.field(default=(), metadata=wire("params"))


@dataclasses.dataclass(frozen=True)
class RegoScript:
    rego: str = dataclasses.field(default="", metadata=wire("rego"))


@dataclasses.dataclass(frozen=True)
class AuthType:
    name: str = dataclasses.field(metadata=wire("name", required=True))
    secret_type: str = dataclasses.field(default="", metadata=wire("secretType"))
    optional: bool = dataclasses.field(default=False, metadata=wire("optional"))
    params: tuple[ParamSpec, ...] = dataclasses.field(default=(), metadata=wire("params"))
    generator: RegoScript | None = dataclasses.field(default=None, metadata=wire("generator"))
    display_name: str = dataclasses.field(default="", metadata=wire("displayName"))
    description: str = dataclasses.field(default="", metadata=wire("description"))


@dataclasses.dataclass(frozen=True)
class ClassAuth:
    types: tuple[AuthType, ...] = dataclasses.field(default=(), metadata=wire("types"))


@dataclasses.dataclass(frozen=True)
class Addressable:
    """Alauda's `ref` to the Service behind a class's proxy or API."""

    kind: str = dataclasses.field(metadata=wire("kind", required=True))
    name: str = dataclasses.field(metadata=wire("name", required=True))
    namespace: str = dataclasses.field(default="", metadata=wire("namespace"))
    api_version: str = dataclasses.field(default="", metadata=wire("apiVersion"))
    group: str = dataclasses.field(default="", metadata=wire("group"))
    address: str = dataclasses.field(default="", metadata=wire("address"))


@dataclasses.dataclass(frozen=True)
class ClassProxy:
    """`protocol` is this project's (the built-in behaviour, e.g. pypi link rewriting);
    the rest is Alauda's: every class here is served by the shared proxy, so `ref`, `uri`,
    `audience` and `CACerts` are accepted and change nothing; a Rego `authExtractor` is
    not supported (the class's Ready condition says so)."""

    protocol: str = dataclasses.field(
        default="",
        metadata=wire("protocol", description="How the proxy treats responses (e.g. pypi)."),
    )
    ref: Addressable | None = dataclasses.field(default=None, metadata=wire("ref"))
    uri: str = dataclasses.field(default="", metadata=wire("uri"))
    audience: str = dataclasses.field(default="", metadata=wire("audience"))
    ca_certs: str = dataclasses.field(default="", metadata=wire("CACerts"))
    auth_extractor: RegoScript | None = dataclasses.field(
        default=None, metadata=wire("authExtractor")
    )


@dataclasses.dataclass(frozen=True)
class ClassAPI:
    """Alauda's ConnectorClass API (a plugin Service): accepted, not served here."""

    ref: Addressable | None = dataclasses.field(default=None, metadata=wire("ref"))
    uri: str = dataclasses.field(default="", metadata=wire("uri"))
    audience: str = dataclasses.field(default="", metadata=wire("audience"))
    ca_certs: str = dataclasses.field(default="", metadata=wire("CACerts"))


@dataclasses.dataclass(frozen=True)
class Configuration:
    name: str = dataclasses.field(metadata=wire("name", required=True))
    data: dict[str, str] = dataclasses.field(default_factory=dict, metadata=wire("data"))
    params: tuple[ParamSpec, ...] = dataclasses.field(default=(), metadata=wire("params"))
    annotations: dict[str, str] = dataclasses.field(
        default_factory=dict, metadata=wire("annotations")
    )


@dataclasses.dataclass(frozen=True)
class ConnectorClassSpec:
    address: ParamSpec | None = dataclasses.field(default=None, metadata=wire("address"))
    auth: ClassAuth = dataclasses.field(default_factory=ClassAuth, metadata=wire("auth"))
    liveness_probe: Probe | None = dataclasses.field(default=None, metadata=wire("livenessProbe"))
    auth_probes: tuple[AuthProbe, ...] = dataclasses.field(default=(), metadata=wire("authProbes"))
    proxy: ClassProxy | None = dataclasses.field(default=None, metadata=wire("proxy"))
    configurations: tuple[Configuration, ...] = dataclasses.field(
        default=(), metadata=wire("configurations")
    )
    params: tuple[ParamSpec, ...] = dataclasses.field(default=(), metadata=wire("params"))
    address_extensions: tuple[ParamSpec, ...] = dataclasses.field(
        default=(), metadata=wire("addressExtensions")
    )
    api: ClassAPI | None = dataclasses.field(default=None, metadata=wire("api"))

    def auth_type(self, name: str) -> AuthType | None:
        return next((t for t in self.auth.types if t.name == name), None)

    def auth_probe(self, auth_name: str) -> Probe | None:
        return next((p.probe for p in self.auth_probes if p.auth_name == auth_name), None)

    def configuration(self, name: str) -> Configuration | None:
        return next((c for c in self.configurations if c.name == name), None)


@dataclasses.dataclass(frozen=True)
class ClassStatus(ResourceStatus):
    """A ConnectorClass's status: its own Ready condition (`reconcile/classes.py`)."""


@dataclasses.dataclass(frozen=True)
class ConnectorClass:
    metadata: ObjectMeta
    spec: ConnectorClassSpec
    status: ClassStatus = ClassStatus()

    @property
    def name(self) -> str:
        return self.metadata.name


# --- Secret --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Secret:
    """A Secret's decoded data. Its repr names the keys only, never the values."""

    metadata: ObjectMeta
    type: str
    data: dict[str, bytes] = dataclasses.field(default_factory=dict)

    def __repr__(self) -> str:
        return (
            f"Secret(name={self.metadata.name!r}, namespace={self.metadata.namespace!r}, "
            f"type={self.type!r}, keys={sorted(self.data)!r})"
        )

    __str__ = __repr__

    @property
    def namespace(self) -> str:
        return self.metadata.namespace or DEFAULT_NAMESPACE

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.metadata.name)
