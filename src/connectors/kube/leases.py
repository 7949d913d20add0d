"""Leader election on a coordination.k8s.io Lease, so two operator replicas never fight.

A candidate takes the Lease when it is free or its holder let it lapse, then renews it
every `renew_seconds`. The API server's optimistic concurrency (resourceVersion on
update) decides races: of two candidates updating the same version, one gets 409 Conflict.
A leader that cannot renew before the lease would lapse must stop leading at once: the
caller's `on_lost` runs, and the process is expected to exit and start over.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from connectors.api import timestamps
from connectors.api.errors import ApiError, ApiUnavailable
from connectors.kube.client import KubeClient, resource_path

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LeaseSettings:
    namespace: str
    name: str
    identity: str
    duration_seconds: int = 15
    renew_seconds: float = 5.0
    retry_seconds: float = 2.0


def _parse(text: str | None) -> datetime | None:
    return timestamps.parse(text) if text else None


class LeaderElector:
    def __init__(self, kube: KubeClient, settings: LeaseSettings) -> None:
        self.kube = kube
        self.settings = settings
        self.path = resource_path(
            "coordination.k8s.io/v1", "Lease", name=settings.name, namespace=settings.namespace
        )

    def _spec(self, acquired: str | None, transitions: int) -> dict[str, Any]:
        now = timestamps.format_micro_time(timestamps.precise_now())
        return {
            "holderIdentity": self.settings.identity,
            "leaseDurationSeconds": self.settings.duration_seconds,
            "acquireTime": acquired or now,
            "renewTime": now,
            "leaseTransitions": transitions,
        }

    async def try_acquire(self) -> bool:
        """Take or renew the Lease once; True when this candidate holds it now."""
        lease = await self.kube.get(self.path)
        if lease is None:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.settings.name, "namespace": self.settings.namespace},
                "spec": self._spec(None, 0),
            }
            collection = self.path.rsplit("/", 1)[0]
            return await self._write("POST", collection, body)
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        transitions = int(spec.get("leaseTransitions") or 0)
        if holder == self.settings.identity:
            lease["spec"] = self._spec(spec.get("acquireTime"), transitions)
            return await self._write("PUT", self.path, lease)
        renewed = _parse(spec.get("renewTime"))
        duration = int(spec.get("leaseDurationSeconds") or self.settings.duration_seconds)
        if holder and renewed and timestamps.precise_now() < renewed + timedelta(seconds=duration):
            return False
        lease["spec"] = self._spec(None, transitions + 1)
        return await self._write("PUT", self.path, lease)

    async def _write(self, method: str, path: str, body: dict[str, Any]) -> bool:
        try:
            await self.kube.request(method, path, body=body)
        except ApiError as exc:
            if exc.status in (409, 422):  # someone else wrote first
                return False
            raise
        return True

    async def acquire(self) -> None:
        """Wait until this candidate leads."""
        announced = False
        while True:
            try:
                if await self.try_acquire():
                    log.info("leading as %s (lease %s)", self.settings.identity, self.path)
                    return
            except (ApiError, ApiUnavailable) as exc:
                log.warning("cannot take the lease now: %s", exc)
            if not announced:
                log.info("another replica leads; waiting for lease %s", self.path)
                announced = True
            await asyncio.sleep(self.settings.retry_seconds)

    async def keep(self, on_lost: Callable[[], None]) -> None:
        """Renew until renewing fails past the lease's lapse; then call on_lost and return."""
        last_renewed = asyncio.get_running_loop().time()
        while True:
            await asyncio.sleep(self.settings.renew_seconds)
            try:
                if await self.try_acquire():
                    last_renewed = asyncio.get_running_loop().time()
                    continue
                log.error("lease %s was taken by another replica", self.path)
            except (ApiError, ApiUnavailable) as exc:
                elapsed = asyncio.get_running_loop().time() - last_renewed
                # Stop leading a little before the lease could lapse for the others.
                if elapsed < self.settings.duration_seconds - self.settings.renew_seconds:
                    log.warning("cannot renew lease %s yet: %s", self.path, exc)
                    continue
                log.error("could not renew lease %s in time: %s", self.path, exc)
            on_lost()
            return

    async def release(self) -> None:
        """Hand the Lease back on a clean stop, so a standby need not wait for it to lapse."""
        try:
            lease = await self.kube.get(self.path)
            spec = (lease or {}).get("spec") or {}
            if lease is None or spec.get("holderIdentity") != self.settings.identity:
                return
            spec["holderIdentity"] = None
            spec["leaseDurationSeconds"] = 1
            lease["spec"] = spec
            await self.kube.request("PUT", self.path, body=lease)
            log.info("released lease %s", self.path)
        except (ApiError, ApiUnavailable) as exc:
            log.warning("could not release lease %s: %s", self.path, exc)
