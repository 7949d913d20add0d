"""Publish a connectors volume: look up its Connectors, get the Pod a token, render, write.

Every publish of the same target is idempotent: while the token in place is younger than
`refresh_fraction` of its life, a repeated NodePublishVolume (kubelet's republish) changes
nothing. Past that, a new token is fetched and the files are rewritten atomically. If no
new token can be had, the old files stay and the call still succeeds: kubelets before
1.37 tear the mount down on an error, which would break a running workload, and the next
republish tries again.

What each target holds is remembered in the state directory (never the token itself).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import grpc

from connectors.api.conditions import ConditionType
from connectors.api.errors import ApiError, ApiUnavailable, NotFoundError, TemplateError
from connectors.api.resources import Connector, ConnectorClass
from connectors.csi import atomic, minting, volume
from connectors.csi.minting import MintedToken
from connectors.csi.volume import PodInfo, VolumeRequest
from connectors.proxy import routing
from connectors.rendering import render
from connectors.store.base import Store

log = logging.getLogger(__name__)

Mint = Callable[[PodInfo, list[str], int], Awaitable[MintedToken]]


class PublishError(Exception):
    """A publish that must fail with a gRPC status code and a message for the user."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        self.code = code
        super().__init__(message)


@dataclasses.dataclass(frozen=True)
class PublisherSettings:
    state_dir: Path
    api_audience: str = "https://kubernetes.default.svc.cluster.local"
    cluster_domain: str = "cluster.local"
    refresh_fraction: float = 0.8


@dataclasses.dataclass(frozen=True)
class Record:
    volume_id: str
    target_path: str
    request_hash: str
    issued_at: float
    expires_at: float

    def due(self, fraction: float, now: float) -> bool:
        return now >= self.issued_at + fraction * (self.expires_at - self.issued_at)


class Publisher:
    def __init__(self, store: Store, mint: Mint, settings: PublisherSettings) -> None:
        self.store = store
        self.mint = mint
        self.settings = settings
        (settings.state_dir / "volumes").mkdir(parents=True, exist_ok=True, mode=0o700)

    # Publishing ---------------------------------------------------------------------------

    async def publish(
        self,
        volume_id: str,
        target: Path,
        context: Mapping[str, str],
        secrets: Mapping[str, str],
    ) -> None:
        try:
            request = volume.parse(context)
        except volume.InvalidVolume as exc:
            raise PublishError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
        request_hash = _hash(request)
        record = self._read_record(target)
        if record is not None and record.volume_id != volume_id:
            raise PublishError(
                grpc.StatusCode.ALREADY_EXISTS,
                f"{target} already holds volume {record.volume_id}",
            )
        now = time.time()
        if (
            record is not None
            and record.request_hash == request_hash
            and not record.due(self.settings.refresh_fraction, now)
            and (target / atomic.DATA_LINK).exists()
        ):
            return  # a republish before the refresh point: nothing to do
        targets = [self._resolve(key, request) for key in request.connectors]
        try:
            token = await self._token(request, targets, secrets, context)
        except (ApiError, ApiUnavailable) as exc:
            if record is not None and (target / atomic.DATA_LINK).exists():
                log.warning("volume %s: cannot refresh its token now (%s); keeping the old files",
                            volume_id, exc)  # fmt: skip
                return
            raise PublishError(
                grpc.StatusCode.UNAVAILABLE, f"cannot get a token for the pod: {exc}"
            ) from None
        files = self._render(request, targets, token)
        try:
            atomic.write(target, files)
        except (OSError, atomic.UnsafeFilename) as exc:
            raise PublishError(grpc.StatusCode.INTERNAL, f"cannot write {target}: {exc}") from None
        self._write_record(
            Record(volume_id, str(target), request_hash, token.issued_at, token.expires_at)
        )

    def _resolve(
        self, key: tuple[str, str], request: VolumeRequest
    ) -> tuple[Connector, ConnectorClass, str]:
        snapshot = self.store.snapshot()
        namespace, name = key
        connector = snapshot.connectors.get(key)
        if connector is None:
            raise PublishError(
                grpc.StatusCode.NOT_FOUND, f"connector {name} not found in namespace {namespace}"
            )
        ready = connector.status.condition(ConditionType.READY)
        if ready is None or not ready.is_true:
            why = f"{ready.reason}: {ready.message}" if ready else "not reconciled yet"
            raise PublishError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"connector {namespace}/{name} is not Ready ({why})",
            )
        cls = snapshot.classes.get(connector.spec.connector_class_name)
        if cls is None:
            raise PublishError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"ConnectorClass {connector.spec.connector_class_name} not found",
            )
        for configuration in request.configurations:
            if cls.spec.configuration(configuration) is None:
                known = ", ".join(c.name for c in cls.spec.configurations) or "none"
                raise PublishError(
                    grpc.StatusCode.NOT_FOUND,
                    f"ConnectorClass {cls.name} has no configuration {configuration!r} "
                    f"(it has: {known})",
                )
        return connector, cls, self._proxy_url(connector)

    def _proxy_url(self, connector: Connector) -> str:
        proxy = connector.status.proxy
        if proxy and proxy.http_address and proxy.http_address.url:
            return proxy.http_address.url
        return routing.cluster_url(
            connector.namespace, connector.name, domain=self.settings.cluster_domain
        )

    async def _token(
        self,
        request: VolumeRequest,
        targets: list[tuple[Connector, ConnectorClass, str]],
        secrets: Mapping[str, str],
        context: Mapping[str, str],
    ) -> MintedToken:
        audiences = [url for _, _, url in targets]
        if len(audiences) == 1:
            handed = minting.from_kubelet(secrets, context, audiences[0])
            if handed is not None:
                return handed
        return await self.mint(
            request.pod, [self.settings.api_audience, *audiences], request.token_seconds
        )

    def _render(
        self,
        request: VolumeRequest,
        targets: list[tuple[Connector, ConnectorClass, str]],
        token: MintedToken,
    ) -> dict[str, str]:
        files: dict[str, str] = {}
        for connector, cls, url in targets:
            context = render.RenderContext(proxy_url=url, token=token.token)
            prefix = f"{connector.name}/" if request.per_connector_directories else ""
            for configuration in request.configurations:
                try:
                    rendered = render.render_configuration(connector, cls, configuration, context)
                except (TemplateError, NotFoundError) as exc:
                    raise PublishError(grpc.StatusCode.FAILED_PRECONDITION, str(exc)) from None
                files.update({prefix + name: text for name, text in rendered.items()})
        return files

    # Unpublishing -------------------------------------------------------------------------

    def unpublish(self, target: Path) -> None:
        atomic.remove(target)
        self._record_path(target).unlink(missing_ok=True)

    # Records ------------------------------------------------------------------------------

    def _record_path(self, target: Path) -> Path:
        digest = hashlib.sha256(str(target).encode()).hexdigest()
        return self.settings.state_dir / "volumes" / f"{digest}.json"

    def _read_record(self, target: Path) -> Record | None:
        try:
            return Record(**json.loads(self._record_path(target).read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def _write_record(self, record: Record) -> None:
        path = self._record_path(Path(record.target_path))
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(record)))
        tmp.replace(path)


def _hash(request: VolumeRequest) -> str:
    return hashlib.sha256(repr(request).encode()).hexdigest()
