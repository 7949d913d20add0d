"""Post Kubernetes Events about an object, so `kubectl describe` tells its story."""

from __future__ import annotations

import logging
from typing import Any

from connectors.api import timestamps
from connectors.api.errors import ApiError, ApiUnavailable
from connectors.kube.client import KubeClient

log = logging.getLogger(__name__)

NORMAL = "Normal"
WARNING = "Warning"


async def post(
    kube: KubeClient,
    involved: dict[str, Any],
    *,
    type_: str,
    reason: str,
    message: str,
    component: str,
) -> None:
    """Record one Event; failing to record it is logged, never raised (it is a courtesy)."""
    metadata = involved.get("metadata") or {}
    namespace = str(metadata.get("namespace") or "default")
    now = timestamps.format_time(timestamps.now())
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{metadata.get('name', 'object')}.", "namespace": namespace},
        "involvedObject": {
            "apiVersion": involved.get("apiVersion"),
            "kind": involved.get("kind"),
            "name": metadata.get("name"),
            "namespace": namespace,
            "uid": metadata.get("uid"),
            "resourceVersion": metadata.get("resourceVersion"),
        },
        "type": type_,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": component},
        "reportingComponent": component,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    try:
        await kube.request("POST", f"/api/v1/namespaces/{namespace}/events", body=event)
    except (ApiError, ApiUnavailable) as exc:
        log.warning("could not record event %s on %s: %s", reason, metadata.get("name"), exc)
