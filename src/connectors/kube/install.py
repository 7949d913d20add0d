"""Install connectors' cluster-wide definitions: the CRDs, then wait until they serve."""

from __future__ import annotations

import asyncio
import time

from connectors.api import crds
from connectors.api.errors import ApiUnavailable
from connectors.kube.client import KubeClient, resource_path

FIELD_MANAGER = "connectors-install"


async def install_crds(
    kube: KubeClient, *, dry_run: bool = False, timeout_seconds: float = 60.0
) -> list[str]:
    """Apply every CRD and wait until each is Established; the names applied."""
    names = []
    for crd in crds.all_crds():
        await kube.apply(crd, field_manager=FIELD_MANAGER, dry_run=dry_run)
        names.append(str(crd["metadata"]["name"]))
    if not dry_run:
        for name in names:
            await _wait_established(kube, name, timeout_seconds)
    return names


async def _wait_established(kube: KubeClient, name: str, timeout_seconds: float) -> None:
    path = resource_path("apiextensions.k8s.io/v1", "CustomResourceDefinition", name=name)
    deadline = time.monotonic() + timeout_seconds
    while True:
        crd = await kube.get(path) or {}
        conditions = (crd.get("status") or {}).get("conditions") or []
        if any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
            return
        if time.monotonic() > deadline:
            raise ApiUnavailable(f"CRD {name} was not Established within {timeout_seconds:g}s")
        await asyncio.sleep(0.2)
