"""The operator's controller: which Connectors to reconcile, when, and what to write back.

Connectors come from the KubeStore's watch, the one source of every resource the operator
reads (kopf watches only the Services it owns, for their deletion). A Connector is queued
when it first appears, when its spec changes (generation ahead of observedGeneration),
when its Secret or class changes, when its Service disappears, and again every re-probe
interval; the queue (`workqueue.py`) keeps a key from being worked on twice at once and
backs off after failures to talk to the API server, which are never written into status.
Each pass: apply the Service, run the shared reconciler, and patch status only when it
differs from what is stored, so a restarted operator that finds everything in order
writes nothing. Each worker runs under `supervision.supervise`, so nothing that goes wrong
around a pass can end it, and a failed pass is logged by `supervision.describe` (never a
third-party message verbatim).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import aiohttp

from connectors.api.conditions import ConditionType, Status
from connectors.api.errors import ApiError, ApiUnavailable, ConnectorsError
from connectors.api.resources import API_VERSION, Connector, ConnectorStatus
from connectors.kube import events
from connectors.kube.client import KubeClient, resource_path
from connectors.operator import services
from connectors.operator.settings import OperatorSettings
from connectors.operator.workqueue import Outcome, Timing, WorkQueue
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
        self.connectors: dict[Key, Connector] = {}
        self.queue: WorkQueue[Key] = WorkQueue(
            Timing(
                resync_seconds=settings.reprobe_interval_seconds,
                first_retry_seconds=settings.retry_seconds,
                max_retry_seconds=MAX_BACKOFF_SECONDS,
            )
        )
        self._services: set[tuple[Key, str]] = set()  # (key, uid) whose Service is applied
        self._workers: list[asyncio.Task[None]] = []
        self.health = Health()
        store.subscribe(self.on_store_change)
        for key in store.snapshot().connectors:  # any listed before this controller listened
            self._connector_changed(key)

    # What the watches say -----------------------------------------------------------------

    def on_store_change(self, kind: str, namespace: str, name: str) -> None:
        if kind == "Connector":
            self._connector_changed((namespace, name))
            return
        for key, connector in list(self.connectors.items()):
            uses_class = kind == "ConnectorClass" and connector.spec.connector_class_name == name
            uses_secret = (
                kind == "Secret" and key[0] == namespace and name in _secret_names(connector)
            )
            if uses_class or uses_secret:
                self.queue.add(key)

    def _connector_changed(self, key: Key) -> None:
        connector = self.store.connector(*key)
        if connector is None:
            self.forget(key)
            return
        before = self.connectors.get(key)
        self.connectors[key] = connector
        if before is None or connector.metadata.generation != connector.status.observed_generation:
            self.queue.add(key)

    def on_service_deleted(self, namespace: str, connector_name: str) -> None:
        key = (namespace, connector_name)
        self._services = {entry for entry in self._services if entry[0] != key}
        if key in self.connectors:
            self.queue.add(key)

    def forget(self, key: Key) -> None:
        self.connectors.pop(key, None)
        self.queue.forget(key)
        self._services = {entry for entry in self._services if entry[0] != key}

    # The workers --------------------------------------------------------------------------

    def start(self) -> None:
        self._workers = [
            asyncio.create_task(
                supervise("reconcile worker", self._work_one, self.health, Backoff(every=0)),
                name=f"reconcile-worker-{n}",
            )
            for n in range(self.settings.workers)
        ]

    async def stop(self) -> None:
        self.queue.close()
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def idle(self) -> bool:
        return self.queue.idle()

    async def _work_one(self) -> None:
        await self.store.synced()  # never judge a Secret missing before the first list
        key = await self.queue.get()
        outcome = Outcome.TERMINAL
        try:
            outcome, problem = await self._pass(key)
        finally:
            delay = self.queue.done(key, outcome)
        if outcome is Outcome.RETRY and delay is not None:
            log.warning("connector %s/%s: %s; retrying in %.0fs", *key, problem, delay)

    async def _pass(self, key: Key) -> tuple[Outcome, str]:
        """One reconcile, and how it ended: a failure to talk to the API server is worth a
        retry soon; any other failure would only repeat, so it waits for the resync."""
        try:
            await self.reconcile_one(key)
        except (ApiError, ApiUnavailable) as exc:
            return Outcome.RETRY, str(exc)
        except ConnectorsError as exc:
            log.error("connector %s/%s: reconcile failed: %s", *key, describe(exc))
            return Outcome.TERMINAL, describe(exc)
        except Exception as exc:  # a bug: one connector's, and its traceback says where
            log.exception("connector %s/%s: reconcile failed: %s", *key, describe(exc))
            return Outcome.TERMINAL, describe(exc)
        return Outcome.SUCCEEDED, ""

    # One pass -----------------------------------------------------------------------------

    async def reconcile_one(self, key: Key) -> None:
        connector = self.connectors.get(key)
        if connector is None:
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
        path = resource_path(API_VERSION, "Connector", name=key[1], namespace=key[0])
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
        await self._announce(connector, connector.status, status)

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
        self, connector: Connector, before: ConnectorStatus, after: ConnectorStatus
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
            _involved(connector),
            type_=type_,
            reason=reason,
            message=message,
            component=COMPONENT,
        )


def _involved(connector: Connector) -> dict[str, Any]:
    """The Connector as an Event's involvedObject names it."""
    metadata = connector.metadata
    return {
        "apiVersion": API_VERSION,
        "kind": "Connector",
        "metadata": {
            "name": metadata.name,
            "namespace": metadata.namespace,
            "uid": metadata.uid,
            "resourceVersion": metadata.resource_version,
        },
    }


def _secret_names(connector: Connector) -> set[str]:
    names = {access.secret_name(connector)}
    if connector.spec.ca_cert_secret_ref is not None:
        names.add(connector.spec.ca_cert_secret_ref.name)
    return {n for n in names if n}
