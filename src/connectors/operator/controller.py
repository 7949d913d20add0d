"""The operator's work queue: which Connectors to reconcile, when, and what to write back.

A Connector is queued when it first appears, when its spec changes (generation ahead of
observedGeneration), when its Secret or class changes, when its Service disappears, and
again every re-probe interval. A key is never worked on twice at once; one queued while
being worked on is worked on again afterwards. Each pass: apply the Service, run the
shared reconciler, and patch status only when it differs from what is stored, so a
restarted operator that finds everything in order writes nothing. Failures to talk to the
API server are retried with backoff; they are never written into status. Each worker runs
under `supervision.supervise`, so nothing that goes wrong around a pass can end it, and a
failed pass is logged by `supervision.describe` (never a third-party message verbatim).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import aiohttp

from connectors.api import manifests
from connectors.api.conditions import ConditionType, Status
from connectors.api.errors import ApiError, ApiUnavailable, ManifestError
from connectors.api.resources import Connector, ConnectorStatus
from connectors.kube import events
from connectors.kube.client import KubeClient, resource_path
from connectors.operator import services
from connectors.operator.settings import OperatorSettings
from connectors.reconcile import probes
from connectors.reconcile.reconciler import ProxyInfo, reconcile
from connectors.registry import access
from connectors.store.kubestore import KubeStore
from connectors.supervision import Backoff, Health, describe, supervise

log = logging.getLogger(__name__)

Key = tuple[str, str]
COMPONENT = "connectors-operator"
FIELD_MANAGER = "connectors-operator"
MAX_BACKOFF_SECONDS = 60.0


class ConnectorController:
    def __init__(
        self,
        kube: KubeClient,
        store: KubeStore,
        session: aiohttp.ClientSession,
        settings: OperatorSettings,
    ) -> None:
        self.kube = kube
        self.store = store
        self.session = session
        self.settings = settings
        self.uploads = probes.UploadChecks()
        self.bodies: dict[Key, dict[str, Any]] = {}
        self.connectors: dict[Key, Connector] = {}
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._queued: set[Key] = set()
        self._active: set[Key] = set()
        self._again: set[Key] = set()
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._failures: dict[Key, int] = {}
        self._services: set[tuple[Key, str]] = set()  # (key, uid) whose Service is applied
        self._workers: list[asyncio.Task[None]] = []
        self.health = Health()
        store.subscribe(self.on_store_change)

    # What the watches say -----------------------------------------------------------------

    def observe(self, event_type: str, body: dict[str, Any]) -> None:
        """A Connector event from the watch."""
        key = _key(body)
        if event_type == "DELETED":
            self.forget(key)
            return
        try:
            connector = manifests.parse({**body, "kind": "Connector"})
        except ManifestError as exc:
            log.error("connector %s/%s cannot be read: %s", *key, exc)
            return
        assert isinstance(connector, Connector)
        before = self.bodies.get(key)
        self.bodies[key] = body
        self.connectors[key] = connector
        generation = (body.get("metadata") or {}).get("generation")
        observed = (body.get("status") or {}).get("observedGeneration")
        if before is None or generation != observed:
            self.enqueue(key)

    def on_service_deleted(self, namespace: str, connector_name: str) -> None:
        key = (namespace, connector_name)
        self._services = {entry for entry in self._services if entry[0] != key}
        if key in self.bodies:
            self.enqueue(key)

    def on_store_change(self, kind: str, namespace: str, name: str) -> None:
        if kind == "Connector":
            return  # the operator's own watch says more (event type, raw body)
        for key, connector in list(self.connectors.items()):
            uses_class = kind == "ConnectorClass" and connector.spec.connector_class_name == name
            uses_secret = (
                kind == "Secret" and key[0] == namespace and name in _secret_names(connector)
            )
            if uses_class or uses_secret:
                self.enqueue(key)

    def forget(self, key: Key) -> None:
        self.bodies.pop(key, None)
        self.connectors.pop(key, None)
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._failures.pop(key, None)
        self._services = {entry for entry in self._services if entry[0] != key}

    # The queue ----------------------------------------------------------------------------

    def enqueue(self, key: Key) -> None:
        if key in self._active:
            self._again.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    def _enqueue_later(self, key: Key, delay: float) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(delay, self.enqueue, key)

    def start(self) -> None:
        self._workers = [
            asyncio.create_task(
                supervise("reconcile worker", self._work_one, self.health, Backoff(every=0)),
                name=f"reconcile-worker-{n}",
            )
            for n in range(self.settings.workers)
        ]

    async def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def idle(self) -> bool:
        return not self._queued and not self._active

    async def _work_one(self) -> None:
        await self.store.synced()  # never judge a Secret missing before the first list
        key = await self._queue.get()
        self._queued.discard(key)
        self._active.add(key)
        try:
            delay = await self._pass(key)
        finally:
            self._active.discard(key)
        if key in self._again:
            self._again.discard(key)
            self.enqueue(key)
        elif delay is not None and key in self.bodies:
            self._enqueue_later(key, delay)

    async def _pass(self, key: Key) -> float | None:
        """One reconcile; the delay until the next one, or None when the key is gone."""
        try:
            await self.reconcile_one(key)
        except (ApiError, ApiUnavailable) as exc:
            failures = self._failures.get(key, 0) + 1
            self._failures[key] = failures
            delay = min(self.settings.retry_seconds * 2.0 ** (failures - 1), MAX_BACKOFF_SECONDS)
            log.warning("connector %s/%s: %s; retrying in %.0fs", *key, exc, delay)
            return delay
        except Exception as exc:
            log.error("connector %s/%s: reconcile failed: %s", *key, describe(exc))
            return self.settings.reprobe_interval_seconds
        self._failures.pop(key, None)
        return self.settings.reprobe_interval_seconds

    # One pass -----------------------------------------------------------------------------

    async def reconcile_one(self, key: Key) -> None:
        body, connector = self.bodies.get(key), self.connectors.get(key)
        if body is None or connector is None:
            return
        proxy = await self._ensure_service(connector)
        status = await reconcile(
            connector,
            self.store.snapshot(),
            session=self.session,
            proxy=proxy,
            previous=connector.status,
            settings=self.settings.reconcile,
            uploads=self.uploads,
        )
        if status.to_dict() == connector.status.to_dict():
            return
        path = resource_path(
            "connectors.alauda.io/v1alpha1", "Connector", name=key[1], namespace=key[0]
        )
        try:
            await self.kube.request(
                "PATCH",
                path + "/status",
                body={"status": status.to_dict()},
                content_type="application/merge-patch+json",
            )
        except ApiError as exc:
            if exc.status == 404:  # deleted meanwhile
                return
            raise
        await self._announce(body, connector.status, status)

    async def _ensure_service(self, connector: Connector) -> ProxyInfo:
        cls = self.store.snapshot().classes.get(connector.spec.connector_class_name)
        url = services.proxy_url(connector, self.settings, cls)
        entry = (connector.key, connector.metadata.uid or "")
        if entry not in self._services:
            try:
                await self.kube.apply(
                    services.desired_service(connector, self.settings),
                    field_manager=FIELD_MANAGER,
                )
            except ApiError as exc:
                return ProxyInfo(
                    url=None,
                    missing_message=f"cannot create Service {services.service_name(connector)}"
                    f" in namespace {connector.namespace}: {exc}",
                )
            self._services.add(entry)
        return ProxyInfo(url=url, audience=services.audience(connector, self.settings))

    async def _announce(
        self, body: dict[str, Any], before: ConnectorStatus, after: ConnectorStatus
    ) -> None:
        old, new = before.condition(ConditionType.READY), after.condition(ConditionType.READY)
        if new is None or (old is not None and old.same_state(new)):
            return
        if new.status is Status.TRUE:
            type_, reason, message = events.NORMAL, "Ready", "the connector is ready to use"
        else:
            type_, reason, message = events.WARNING, new.reason or "NotReady", new.message
        await events.post(
            self.kube,
            {**body, "apiVersion": "connectors.alauda.io/v1alpha1", "kind": "Connector"},
            type_=type_,
            reason=reason,
            message=message,
            component=COMPONENT,
        )


def _key(body: dict[str, Any]) -> Key:
    metadata = body.get("metadata") or {}
    return (str(metadata.get("namespace") or ""), str(metadata.get("name") or ""))


def _secret_names(connector: Connector) -> set[str]:
    names = {access.secret_name(connector)}
    if connector.spec.ca_cert_secret_ref is not None:
        names.add(connector.spec.ca_cert_secret_ref.name)
    return {n for n in names if n}
