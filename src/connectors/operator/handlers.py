"""kopf glue: the watch of the Services the operator owns, and the API credentials kopf
uses. Connectors, classes and Secrets come from the KubeStore alone.

Only an event-watching handler is registered: it adds no finalizers and writes nothing to
the watched objects, so deleting a Connector or its namespace never waits for the operator.
"""

from __future__ import annotations

from typing import Any

import kopf

from connectors.kube.config import ClusterConfig
from connectors.operator import services
from connectors.operator.controller import ConnectorController


def build_registry(controller: ConnectorController, config: ClusterConfig) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return connection_info(config)

    @kopf.on.event(
        "", "v1", "services",
        labels={"app.kubernetes.io/managed-by": services.MANAGED_BY},
        registry=registry,
    )  # fmt: skip
    def service_event(event: kopf.RawEvent, **_: Any) -> None:
        if event.get("type") != "DELETED":
            return
        metadata = event["object"].get("metadata") or {}
        owner = (metadata.get("labels") or {}).get(services.CONNECTOR_LABEL)
        if owner:
            controller.on_service_deleted(str(metadata.get("namespace")), str(owner))

    return registry


def kopf_settings() -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.posting.enabled = False  # the controller records its own Events
    settings.scanning.disabled = True  # no need to list CRDs or namespaces cluster-wide
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 60
    return settings


def connection_info(config: ClusterConfig) -> kopf.ConnectionInfo:
    token = config.bearer_token()  # read afresh: kopf logs in again when it expires
    return kopf.ConnectionInfo(
        server=config.server,
        ca_data=config.ca_data,  # kopf takes PEM as it is
        insecure=config.insecure_skip_tls_verify or None,
        scheme="Bearer" if token else None,
        token=token,
        certificate_data=config.client_cert,
        private_key_data=config.client_key,
        default_namespace=config.namespace,
    )
