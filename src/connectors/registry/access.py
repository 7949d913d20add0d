"""What it takes to talk to a connector's registry: its credentials and its TLS trust.

Both the reconciler's probes and the proxy use these, so the proxy injects exactly the
credentials the probes checked. Values here are secret: reprs and errors never show them.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import ssl

from connectors.api.conditions import Reason
from connectors.api.resources import (
    BASIC_AUTH_SECRET_TYPE,
    Connector,
    ConnectorClass,
    Secret,
)
from connectors.store.base import Snapshot


@dataclasses.dataclass(frozen=True)
class BasicCredentials:
    username: str
    password: str = dataclasses.field(repr=False)

    def __repr__(self) -> str:
        return f"BasicCredentials(username={self.username!r}, password=<hidden>)"

    def authorization(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


@dataclasses.dataclass(frozen=True)
class CredentialsProblem:
    """Why a connector has no usable credentials; `reason` is a condition reason."""

    reason: Reason
    message: str


CredentialsResult = BasicCredentials | CredentialsProblem | None


@dataclasses.dataclass(frozen=True)
class AddressExtension:
    """A host the proxy takes over links to: the Connector's own extensions (its author
    named them, so its credentials go there), then the class's defaults it does not
    override (never credentialed)."""

    name: str
    url: str
    credentialed: bool


def address_extensions(connector: Connector, cls: ConnectorClass | None) -> list[AddressExtension]:
    own = [AddressExtension(e.name, e.value, True) for e in connector.spec.address_extensions]
    named = {e.name for e in own}
    defaults = [
        AddressExtension(spec.name, spec.default, False)
        for spec in (cls.spec.address_extensions if cls else ())
        if spec.default and spec.name not in named
    ]
    return own + defaults


def secret_name(connector: Connector) -> str | None:
    auth = connector.spec.auth
    return auth.secret_ref.name if auth and auth.secret_ref else None


def credentials_for(
    connector: Connector, cls: ConnectorClass, snapshot: Snapshot
) -> CredentialsResult:
    """The connector's upstream credentials, a problem explaining their absence, or None
    when the connector needs none."""
    auth_name = connector.spec.auth.name if connector.spec.auth else ""
    auth_type = cls.spec.auth_type(auth_name) if auth_name else None
    if auth_name and auth_type is None:
        known = ", ".join(t.name for t in cls.spec.auth.types) or "none"
        return CredentialsProblem(
            Reason.SECRET_INVALID,
            f"ConnectorClass {cls.name} has no auth type {auth_name!r} (it has: {known}); "
            "fix spec.auth.name",
        )
    name = secret_name(connector)
    reference = connector.spec.auth.secret_ref if connector.spec.auth else None
    elsewhere = reference.namespace if reference else ""
    if elsewhere and elsewhere != connector.namespace:
        return CredentialsProblem(
            Reason.SECRET_INVALID,
            f"spec.auth.secretRef.namespace is {elsewhere}, but a Connector may use only "
            f"Secrets of its own namespace ({connector.namespace}): create the Secret there "
            "and remove the namespace field",
        )
    if name is None:
        if auth_type is not None and not auth_type.optional:
            return CredentialsProblem(
                Reason.SECRET_NOT_FOUND,
                f"auth {auth_name} needs a Secret: set spec.auth.secretRef.name",
            )
        return None
    secret = snapshot.secrets.get((connector.namespace, name))
    if secret is None:
        return CredentialsProblem(
            Reason.SECRET_NOT_FOUND,
            f"Secret {name} not found in namespace {connector.namespace}: "
            "create it or fix spec.auth.secretRef.name",
        )
    expected = auth_type.secret_type if auth_type and auth_type.secret_type else None
    return _basic_from_secret(secret, expected or BASIC_AUTH_SECRET_TYPE)


def _basic_from_secret(secret: Secret, expected_type: str) -> CredentialsResult:
    where = f"Secret {secret.metadata.name} in namespace {secret.namespace}"
    if secret.type != expected_type:
        return CredentialsProblem(
            Reason.SECRET_INVALID, f"{where} has type {secret.type}; it must be {expected_type}"
        )
    missing = [k for k in ("username", "password") if not secret.data.get(k)]
    if missing:
        return CredentialsProblem(
            Reason.SECRET_INVALID, f"{where} lacks {' and '.join(missing)}: add them to stringData"
        )
    try:
        return BasicCredentials(
            username=secret.data["username"].decode("utf-8"),
            password=secret.data["password"].decode("utf-8"),
        )
    except UnicodeDecodeError:
        return CredentialsProblem(Reason.SECRET_INVALID, f"{where} holds values that are not UTF-8")


def ca_bundle_for(connector: Connector, snapshot: Snapshot) -> bytes | CredentialsProblem | None:
    """PEM CA certificates from spec.caCertSecretRef (key `ca.crt`), if the connector names one."""
    ref = connector.spec.ca_cert_secret_ref
    if ref is None:
        return None
    secret = snapshot.secrets.get((connector.namespace, ref.name))
    if secret is None or not secret.data.get("ca.crt"):
        return CredentialsProblem(
            Reason.CA_CERT_NOT_FOUND,
            f"Secret {ref.name} with key ca.crt not found in namespace {connector.namespace}",
        )
    bundle = secret.data["ca.crt"]
    try:
        ssl_context(bundle)  # a tenant's Secret: refused here, never while serving
    except (ssl.SSLError, ValueError):
        return CredentialsProblem(
            Reason.INVALID_PEM,
            f"Secret {ref.name} key ca.crt holds no usable PEM CA certificate",
        )
    return bundle


@functools.lru_cache(maxsize=64)
def ssl_context(ca_bundle: bytes | None) -> ssl.SSLContext:
    """A verifying TLS context trusting the system roots plus `ca_bundle`."""
    context = ssl.create_default_context()
    if ca_bundle:
        context.load_verify_locations(cadata=ca_bundle.decode("ascii", errors="replace"))
    return context
