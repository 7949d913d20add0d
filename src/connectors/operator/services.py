"""The per-connector Service and the proxy address it gives clients: pure functions.

`c-<name>` in the Connector's namespace is an ExternalName alias of the shared proxy
Service, so `http://c-<name>.<namespace>.svc.<domain>/` reaches the proxy with that name in
the Host header, which tells the proxy which connector is meant. It is owned by its
Connector, so the garbage collector removes it with the Connector; no finalizer is needed,
and deleting a namespace never waits for the operator.
"""

from __future__ import annotations

from typing import Any

from connectors.api import addresses
from connectors.api.resources import API_VERSION, Connector, ConnectorClass
from connectors.operator.settings import OperatorSettings

MANAGED_BY = "connectors-operator"
CONNECTOR_LABEL = "connectors.alauda.io/connector"


def service_name(connector: Connector) -> str:
    return addresses.service_name(connector.name)


RESOLVER_ANNOTATION = "connectors.cpaas.io/proxy-resolver"


def audience(connector: Connector, settings: OperatorSettings) -> str:
    """The audience a token minted for this connector carries: its host-form address."""
    return addresses.cluster_url(
        connector.namespace,
        connector.name,
        domain=settings.cluster_domain,
        scheme=settings.proxy_scheme,
    )


def proxy_url(
    connector: Connector, settings: OperatorSettings, cls: ConnectorClass | None = None
) -> str:
    """Where clients reach the connector: its own Service (`c-<name>`), or, when its class
    carries Alauda's `connectors.cpaas.io/proxy-resolver: path`, the shared proxy Service
    with the connector in the path. The proxy routes both forms."""
    resolver = cls.metadata.annotations.get(RESOLVER_ANNOTATION, "") if cls else ""
    if resolver == "path":
        return (
            f"{settings.proxy_scheme}://{_shared_proxy_host(settings)}"
            f"{addresses.path_form(connector.namespace, connector.name)}"
        )
    return audience(connector, settings)


def _shared_proxy_host(settings: OperatorSettings) -> str:
    return addresses.service_host(
        settings.proxy_service_namespace, settings.proxy_service_name, settings.cluster_domain
    )


def desired_service(connector: Connector, settings: OperatorSettings) -> dict[str, Any]:
    port = 443 if settings.proxy_scheme == "https" else 80
    target = _shared_proxy_host(settings)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": service_name(connector),
            "namespace": connector.namespace,
            "labels": {
                "app.kubernetes.io/managed-by": MANAGED_BY,
                CONNECTOR_LABEL: connector.name,
            },
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": "Connector",
                    "name": connector.name,
                    "uid": connector.metadata.uid,
                    "controller": True,
                }
            ],
        },
        "spec": {
            "type": "ExternalName",
            "externalName": target,
            "ports": [{"name": settings.proxy_scheme, "port": port, "protocol": "TCP"}],
        },
    }
