"""The operator's settings, parsed once from the command line and passed down."""

from __future__ import annotations

import dataclasses

from connectors.api import addresses
from connectors.reconcile.reconciler import ReconcileSettings


@dataclasses.dataclass(frozen=True)
class OperatorSettings:
    proxy_service_name: str = "connectors-proxy"
    proxy_service_namespace: str = "connectors-system"
    cluster_domain: str = addresses.DEFAULT_CLUSTER_DOMAIN
    proxy_scheme: str = "http"
    reprobe_interval_seconds: float = 60.0
    workers: int = 16
    retry_seconds: float = 2.0
    lease_namespace: str = "connectors-system"
    lease_name: str = "connectors-operator"
    identity: str = ""
    # Apply the built-in ConnectorClasses on start; off where an installer owns them.
    builtin_classes: bool = True
    reconcile: ReconcileSettings = ReconcileSettings()
