"""Each ConnectorClass's status: its Ready condition (`reconcile/classes.py`), written by
the leading operator when a class appears or changes, and only when it differs from what
is stored, so a restarted operator that finds everything in order writes nothing."""

from __future__ import annotations

import asyncio
import logging

from connectors.api.conditions import ConditionType, keep_transition_times
from connectors.api.errors import ApiError
from connectors.api.resources import GROUP, VERSION, ClassStatus, ConnectorClass
from connectors.kube.client import KubeClient
from connectors.reconcile import classes
from connectors.store.kubestore import KubeStore
from connectors.supervision import Backoff, Health, supervise

log = logging.getLogger(__name__)

LOOP = "ConnectorClass status"


class ClassStatusWriter:
    def __init__(self, kube: KubeClient, store: KubeStore, health: Health) -> None:
        self.kube = kube
        self.store = store
        self.health = health
        self._pending: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        store.subscribe(self.on_store_change)

    def on_store_change(self, kind: str, namespace: str, name: str) -> None:
        if kind == "ConnectorClass":
            self._pending.add(name)
            self._wake.set()

    def start(self) -> None:
        self._pending |= set(self.store.snapshot().classes)
        self._wake.set()
        backoff = Backoff(every=0, first=1, ceiling=30)
        self._task = asyncio.create_task(supervise(LOOP, self._step, self.health, backoff))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _step(self) -> None:
        await self._wake.wait()
        self._wake.clear()
        pending, self._pending = self._pending, set()
        try:
            for name in sorted(pending):
                await self._write(name)
                pending.discard(name)
        except BaseException:
            self._pending |= pending  # what was not written is tried again
            self._wake.set()
            raise

    async def _write(self, name: str) -> None:
        cls = self.store.snapshot().classes.get(name)
        if cls is None:
            return
        status = desired_status(cls)
        if status.to_dict() == cls.status.to_dict():
            return
        path = f"/apis/{GROUP}/{VERSION}/connectorclasses/{name}/status"
        try:
            await self.kube.request(
                "PATCH", path, body={"status": status.to_dict()},
                content_type="application/merge-patch+json",
            )  # fmt: skip
        except ApiError as exc:
            if exc.status == 404:
                return  # deleted meanwhile, or a built-in class not installed
            raise
        ready = status.condition(ConditionType.READY)
        if ready is not None and not ready.is_true:
            log.warning("ConnectorClass %s is not Ready: %s", name, ready.reason)


def desired_status(cls: ConnectorClass) -> ClassStatus:
    conditions = keep_transition_times(cls.status.conditions, (classes.ready_condition(cls),))
    return ClassStatus(conditions=conditions, observed_generation=cls.metadata.generation)
