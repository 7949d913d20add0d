"""Kubernetes mode's store: Connectors, ConnectorClasses and Secrets kept current by watches.

Each kind is listed once and then watched from the list's resourceVersion; a watch that
breaks is resumed, and one whose version has expired (410 Gone) lists again. Each kind's
watch runs supervised (`supervision.supervise`): whatever breaks it is logged and retried
with backoff, and `readiness()` names a watch that keeps failing. Readers get an
immutable Snapshot rebuilt only after something changed, so the proxy and the reconciler
never wait on the API server. Listeners hear of every change (kind, namespace, name), so
the operator can re-check the Connectors a changed Secret or class concerns.

Secrets are kept whole only for the types a connector can use (basic-auth for credentials,
Opaque and TLS for CA certificates); any other Secret is kept as its name and type, so a
Connector pointing at one is told its Secret has the wrong type rather than not found.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
from collections.abc import Callable, Iterable
from typing import Any

from connectors.api import manifests
from connectors.api.errors import ApiError, ManifestError
from connectors.api.resources import (
    API_VERSION,
    BASIC_AUTH_SECRET_TYPE,
    Connector,
    ConnectorClass,
    Secret,
)
from connectors.kube.client import KubeClient, resource_path
from connectors.store.base import Snapshot
from connectors.supervision import Backoff, Health, supervise

log = logging.getLogger(__name__)

DATA_KEPT_FOR = frozenset({BASIC_AUTH_SECRET_TYPE, "Opaque", "kubernetes.io/tls"})
Listener = Callable[[str, str, str], None]  # (kind, namespace, name)


@dataclasses.dataclass(frozen=True)
class Watched:
    api_version: str
    kind: str


WATCHED = (
    Watched(API_VERSION, "ConnectorClass"),
    Watched("v1", "Secret"),
    Watched(API_VERSION, "Connector"),
)


class KubeStore:
    """Start with `await store.start()`; `await store.synced()` waits for the first lists.

    `base_classes` are present unless the cluster has a class of the same name (the
    built-in classes, so a proxy serves before the operator has installed them). With
    `secrets=False` no Secret is read (the CSI driver has no business with them)."""

    def __init__(
        self,
        kube: KubeClient,
        *,
        base_classes: Iterable[ConnectorClass] = (),
        secrets: bool = True,
        retry_seconds: float = 2.0,
    ) -> None:
        self.kube = kube
        self.watched = tuple(w for w in WATCHED if secrets or w.kind != "Secret")
        self.base_classes = {c.name: c for c in base_classes}
        self.retry_seconds = retry_seconds
        self._objects: dict[str, dict[tuple[str, str], Any]] = {w.kind: {} for w in WATCHED}
        self._snapshot = Snapshot()
        self._dirty = False
        self._listeners: list[Listener] = []
        self._synced = {w.kind: asyncio.Event() for w in self.watched}
        self._versions: dict[str, str | None] = {w.kind: None for w in self.watched}
        self._tasks: list[asyncio.Task[None]] = []
        # An API server outage is ridden out on the last lists; only one that lasts (five
        # failed attempts in a row, half a minute or more) makes this store unready.
        self.health = Health(unready_after=5)

    def snapshot(self) -> Snapshot:
        if self._dirty:
            self._dirty = False
            self._snapshot = Snapshot(
                connectors=dict(self._objects["Connector"]),
                classes=self.base_classes
                | {name: c for (_, name), c in self._objects["ConnectorClass"].items()},
                secrets=dict(self._objects["Secret"]),
            )
        return self._snapshot

    def connector(self, namespace: str, name: str) -> Connector | None:
        """One Connector as last seen, without building a snapshot (a listener's view)."""
        found = self._objects["Connector"].get((namespace, name))
        return found if isinstance(found, Connector) else None

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def start(self) -> None:
        backoff = Backoff(every=0, first=self.retry_seconds, ceiling=max(self.retry_seconds, 10))
        self._tasks = [
            asyncio.create_task(
                supervise(_loop_name(w), functools.partial(self._watch, w), self.health, backoff)
            )
            for w in self.watched
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def synced(self) -> None:
        for event in self._synced.values():
            await event.wait()

    def is_synced(self) -> bool:
        return all(e.is_set() for e in self._synced.values())

    def readiness(self) -> list[str]:
        """Why this store cannot be relied on (empty when it can): for `/readyz`."""
        synced = self._synced.items()
        unlisted = [f"{_plural(kind)} not listed yet" for kind, e in synced if not e.is_set()]
        return unlisted + self.health.problems()

    # Watching ----------------------------------------------------------------------------

    async def _watch(self, watched: Watched) -> None:
        """One watch of a kind, listing first when there is no version to resume from; it
        ends when the API server ends the watch. Failures are the supervisor's to retry."""
        path = resource_path(watched.api_version, watched.kind)
        name = _loop_name(watched)
        version = self._versions[watched.kind]
        if version is None:
            version = self._versions[watched.kind] = await self._relist(watched, path)
            self.health.succeeded(name)
        try:
            opened = functools.partial(self.health.succeeded, name)
            async for event in self.kube.watch(path, version, on_open=opened):
                version = self._apply_event(watched, event) or version
                self._versions[watched.kind] = version
                self.health.succeeded(name)
        except ApiError as exc:
            if exc.status != 410:
                raise
            self._versions[watched.kind] = None  # too old: list afresh on the next pass

    async def _relist(self, watched: Watched, path: str) -> str:
        listing = await self.kube.list_all(path)
        fresh: dict[tuple[str, str], Any] = {}
        for item in listing["items"]:
            resource = self._parse(watched, item)
            if resource is not None:
                fresh[_key(item)] = resource
        before = self._objects[watched.kind]
        self._objects[watched.kind] = fresh
        self._dirty = True
        for key in set(before) | set(fresh):
            if before.get(key) != fresh.get(key):
                self._notify(watched.kind, key)
        self._synced[watched.kind].set()
        return str(listing["metadata"].get("resourceVersion", ""))

    def _apply_event(self, watched: Watched, event: dict[str, Any]) -> str | None:
        item = event.get("object") or {}
        version = (item.get("metadata") or {}).get("resourceVersion")
        kind = event.get("type")
        if kind == "BOOKMARK":
            return str(version) if version else None
        key = _key(item)
        objects = self._objects[watched.kind]
        if kind == "DELETED":
            objects.pop(key, None)
        else:
            resource = self._parse(watched, item)
            if resource is None:
                objects.pop(key, None)
            else:
                objects[key] = resource
        self._dirty = True
        self._notify(watched.kind, key)
        return str(version) if version else None

    def _parse(self, watched: Watched, item: dict[str, Any]) -> Any:
        document = {**item, "apiVersion": watched.api_version, "kind": watched.kind}
        if watched.kind == "Secret" and item.get("type", "Opaque") not in DATA_KEPT_FOR:
            document = {**document, "data": {}, "stringData": {}}
        try:
            resource = manifests.parse(document)
        except ManifestError as exc:
            log.warning("ignoring %s %s: %s", watched.kind, "/".join(_key(item)), exc)
            return None
        assert isinstance(resource, Connector | ConnectorClass | Secret)
        return resource

    def _notify(self, kind: str, key: tuple[str, str]) -> None:
        for listener in self._listeners:
            try:
                listener(kind, *key)
            except Exception:
                log.exception("a store listener failed")


def _loop_name(watched: Watched) -> str:
    return f"watching {_plural(watched.kind)}"


def _plural(kind: str) -> str:
    return kind + ("es" if kind.endswith("s") else "s")


def _key(item: dict[str, Any]) -> tuple[str, str]:
    metadata = item.get("metadata") or {}
    return (str(metadata.get("namespace") or ""), str(metadata.get("name") or ""))
