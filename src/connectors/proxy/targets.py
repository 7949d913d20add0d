"""Everything the proxy needs to serve one connector, derived once per store snapshot.

Building a Target reads only the in-memory snapshot, and the result is reused until the
store replaces its snapshot (a file or Secret changed), so a rotated Secret takes effect on
the next request without any per-request parsing.
"""

from __future__ import annotations

import dataclasses
import ssl

from connectors.api.resources import Connector, ConnectorClass
from connectors.classes import protocols
from connectors.proxy import filecache, links
from connectors.registry import access
from connectors.rendering import render
from connectors.store.base import Snapshot, Store


@dataclasses.dataclass(frozen=True)
class Target:
    connector: Connector
    link_map: links.LinkMap
    protocol: protocols.ProxyProtocol
    credentials: access.BasicCredentials | None
    problem: str | None  # why the connector cannot be served now (no usable Secret...)
    tls: ssl.SSLContext
    cache_scope: str  # where its files live in the cache of files (filecache.scope_of)

    def __repr__(self) -> str:
        return f"Target({self.connector.namespace}/{self.connector.name})"


def build_target(connector: Connector, snapshot: Snapshot) -> Target:
    cls = snapshot.classes.get(connector.spec.connector_class_name)
    problem: str | None = None
    credentials: access.BasicCredentials | None = None
    protocol = protocols.PLAIN
    params: dict[str, str] = {p.name: p.value for p in connector.spec.params}
    if cls is None:
        problem = f"ConnectorClass {connector.spec.connector_class_name} not found"
    else:
        params = render.effective_params(connector, cls)
        protocol = protocols.protocol_named(cls.spec.proxy.protocol if cls.spec.proxy else "")
        found = access.credentials_for(connector, cls, snapshot)
        if isinstance(found, access.CredentialsProblem):
            problem = found.message
        else:
            credentials = found
    ca = access.ca_bundle_for(connector, snapshot)
    if isinstance(ca, access.CredentialsProblem):
        problem = problem or ca.message
    sent = credentials.authorization() if credentials is not None else ""
    link_map = links.LinkMap(
        address=connector.spec.address,
        extensions=extensions_of(connector, cls),
        aliases=protocol.path_aliases(params),
        origin_key=links.origin_key(connector.namespace, connector.name, sent),
    )
    return Target(
        connector=connector,
        link_map=link_map,
        protocol=protocol,
        credentials=credentials,
        problem=problem,
        tls=access.ssl_context(ca if isinstance(ca, bytes) else None),
        cache_scope=filecache.scope_of(
            connector.namespace, connector.name, connector.spec.address, sent
        ),
    )


def extensions_of(connector: Connector, cls: ConnectorClass | None) -> tuple[links.Extension, ...]:
    return tuple(
        links.Extension(e.name, e.url, credentialed=e.credentialed)
        for e in access.address_extensions(connector, cls)
    )


class TargetCache:
    """Targets by (namespace, name), rebuilt when the store's snapshot changes."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._for: Snapshot | None = None
        self._targets: dict[tuple[str, str], Target] = {}

    def get(self, namespace: str, name: str) -> Target | None:
        snapshot = self.store.snapshot()
        if snapshot is not self._for:
            self._for = snapshot
            self._targets = {}
        key = (namespace, name)
        target = self._targets.get(key)
        if target is None:
            connector = snapshot.connectors.get(key)
            if connector is None:
                return None
            target = self._targets[key] = build_target(connector, snapshot)
        return target
