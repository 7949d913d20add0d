"""Publish a connectors volume: look up its Connectors, take the Pod's token, render, write.

The token is the one kubelet hands over for `audiences.WORKLOAD` (the CSIDriver asks for
it in `spec.tokenRequests`; kubelet mints it bound to the Pod and renews it before it
expires). Only when the driver is allowed to mint (`mint_tokens`, an opt-in that needs the
right to create any ServiceAccount's token) does it request tokens itself, for a
`token.expiration` shorter than kubelet's or when kubelet hands none over.

Every publish of the same target is idempotent. Kubelet republishes periodically; each
time the files are rendered again and rewritten, in place, only if they changed (a renewed
token, an edited class template). A minted token is kept until `refresh_fraction` of its
life has passed. If a republish cannot render (the Connector is not Ready, the API server
is away), the old files stay and the call still succeeds: kubelets before 1.37 tear the
mount down on an error, which would break a running workload, and the next republish
tries again.

What each target holds is remembered in the state directory: hashes and times, never a
token. The files themselves live on a tmpfs of the volume's own (`memoryfs`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import grpc

from connectors.api import addresses
from connectors.api.conditions import ConditionType
from connectors.api.errors import (
    ApiError,
    ApiUnavailable,
    NotFoundError,
    TemplateError,
    VolumeError,
)
from connectors.api.resources import Connector, ConnectorClass
from connectors.auth import audiences, kubeauth
from connectors.csi import files, memoryfs, minting, volume
from connectors.csi.minting import MintedToken
from connectors.csi.volume import PodInfo, VolumeRequest
from connectors.rendering import render
from connectors.store.base import Store

log = logging.getLogger(__name__)

Mint = Callable[[PodInfo, list[str], int], Awaitable[MintedToken]]
MayUse = Callable[[PodInfo, str, str], Awaitable[bool]]  # (pod, namespace, connector name)
Target = tuple[Connector, ConnectorClass, str]  # a connector, its class, its proxy URL


class PublishError(VolumeError):
    """A publish that must fail with a gRPC status code and a message for the user."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        self.code = code
        super().__init__(message)


@dataclasses.dataclass(frozen=True)
class PublisherSettings:
    state_dir: Path
    workload_audience: str = audiences.WORKLOAD
    cluster_domain: str = addresses.DEFAULT_CLUSTER_DOMAIN
    proxy_scheme: str = "http"
    refresh_fraction: float = minting.DEFAULT_REFRESH_FRACTION
    mint_tokens: bool = False


@dataclasses.dataclass(frozen=True)
class Record:
    volume_id: str
    target_path: str
    request_hash: str
    content_hash: str
    expires_at: float
    minted_at: float | None = None  # set when the driver minted the token itself

    def fresh_minted_token(self, fraction: float, now: float) -> bool:
        if self.minted_at is None:
            return False
        return now < self.minted_at + fraction * (self.expires_at - self.minted_at)


class Publisher:
    def __init__(
        self, store: Store, mint: Mint, may_use: MayUse, settings: PublisherSettings
    ) -> None:
        self.store = store
        self.mint = mint
        self.may_use = may_use
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
        request_hash = _hash(repr(request))
        record = self._read_record(target)
        if record is not None and record.volume_id != volume_id:
            raise PublishError(
                grpc.StatusCode.ALREADY_EXISTS,
                f"{target} already holds volume {record.volume_id}",
            )
        published = record is not None and memoryfs.is_memory_backed(target)
        if (
            published
            and record is not None
            and record.request_hash == request_hash
            and record.fresh_minted_token(self.settings.refresh_fraction, time.time())
        ):
            return  # a republish before the minted token's refresh point: nothing to do
        try:
            rendered, token, minted = await self._prepare(request, context, secrets)
            files.check(rendered)  # before anything is mounted: a refusal leaves nothing
            content_hash = _hash(json.dumps(rendered, sort_keys=True))
            if not (published and record is not None and record.content_hash == content_hash):
                self._write_files(target, rendered, first=not published)
        except (PublishError, ApiError, ApiUnavailable, files.UnsafeFilename) as exc:
            if published:
                log.warning("volume %s: cannot refresh its files now (%s); keeping the old ones",
                            volume_id, exc)  # fmt: skip
                return
            if isinstance(exc, PublishError):
                raise
            if isinstance(exc, files.UnsafeFilename):
                raise PublishError(grpc.StatusCode.FAILED_PRECONDITION, str(exc)) from None
            raise PublishError(
                grpc.StatusCode.UNAVAILABLE, f"cannot get a token for the pod: {exc}"
            ) from None
        self._write_record(
            Record(
                volume_id, str(target), request_hash, content_hash, token.expires_at,
                minted_at=token.issued_at if minted else None,
            )
        )  # fmt: skip

    async def _prepare(
        self, request: VolumeRequest, context: Mapping[str, str], secrets: Mapping[str, str]
    ) -> tuple[dict[str, str], MintedToken, bool]:
        """The files to write, the token in them, and whether the driver minted it."""
        await self._check_access(request)
        targets = self._resolve_all(request)
        token, minted = await self._token(request, targets, secrets, context)
        return self._render(request, targets, token), token, minted

    def _write_files(self, target: Path, rendered: dict[str, str], *, first: bool) -> None:
        """Write into the volume's tmpfs (mounted first if need be). A first publish that
        fails leaves nothing behind: kubelet will not unpublish what it never saw mounted."""
        try:
            if not memoryfs.is_memory_backed(target):
                files.remove(target)  # whatever is on the disk there goes before any token
                memoryfs.mount(target)
            files.write(target, rendered)
        except (OSError, ValueError) as exc:
            if first:
                with contextlib.suppress(OSError):
                    memoryfs.unmount(target)
                    files.remove(target)
            raise PublishError(grpc.StatusCode.INTERNAL, f"cannot write {target}: {exc}") from None

    async def _check_access(self, request: VolumeRequest) -> None:
        """A Connector of another namespace is rendered only for a ServiceAccount that may
        `get` it, asked before its existence is (the same question the proxy asks): a Pod
        learns nothing about another namespace's Connectors it may not use. Connectors in
        `kube-public` are cluster level (Alauda's scope rule): every Pod may mount them."""
        pod = request.pod
        for namespace, name in request.connectors:
            shared = namespace in (pod.namespace, kubeauth.CLUSTER_LEVEL_NAMESPACE)
            if not shared and not await self.may_use(pod, namespace, name):
                raise PublishError(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"ServiceAccount {pod.namespace}/{pod.service_account} may not use "
                    f"connector {namespace}/{name}: grant it get on that Connector (the "
                    f"connectors-download ClusterRole, bound in namespace {namespace})",
                )

    def _resolve_all(self, request: VolumeRequest) -> list[Target]:
        """The mount's connectors; each named configuration must exist in one of their
        classes at least (a mount may mix classes, each contributing what it has)."""
        targets = [self._resolve(key) for key in request.connectors]
        classes = {cls.name: cls for _, cls, _ in targets}
        for configuration in request.configurations:
            if all(cls.spec.configuration(configuration) is None for cls in classes.values()):
                known = sorted(
                    {c.name for cls in classes.values() for c in cls.spec.configurations}
                )
                raise PublishError(
                    grpc.StatusCode.NOT_FOUND,
                    f"ConnectorClass {', '.join(classes)} has no configuration "
                    f"{configuration!r} (it has: {', '.join(known) or 'none'})",
                )
        return targets

    def _resolve(self, key: tuple[str, str]) -> Target:
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
        return connector, cls, self._proxy_url(connector)

    def _audience(self, connector: Connector) -> str:
        """What a minted token must carry for the proxy: the connector's host-form address
        (also when clients reach it by the path form), by the rule the proxy checks with."""
        return addresses.cluster_url(
            connector.namespace,
            connector.name,
            domain=self.settings.cluster_domain,
            scheme=self.settings.proxy_scheme,
        )

    def _proxy_url(self, connector: Connector) -> str:
        """Where clients reach the connector, as the operator reports it (the path form for
        a class with the path resolver); its own address until the operator has said."""
        proxy = connector.status.proxy
        if proxy and proxy.http_address and proxy.http_address.url:
            return proxy.http_address.url
        return self._audience(connector)

    async def _token(
        self,
        request: VolumeRequest,
        targets: list[Target],
        secrets: Mapping[str, str],
        context: Mapping[str, str],
    ) -> tuple[MintedToken, bool]:
        handed = minting.from_kubelet(secrets, context, self.settings.workload_audience)
        wanted = request.token_seconds
        if handed is not None and (wanted is None or handed.lifetime <= wanted + 60):
            return handed, False
        if self.settings.mint_tokens:
            audiences = [self._audience(connector) for connector, _, _ in targets]
            seconds = wanted or volume.DEFAULT_TOKEN_SECONDS
            return await self.mint(request.pod, audiences, seconds), True
        if handed is not None:
            raise PublishError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{volume.TOKEN_EXPIRATION} asks for {wanted} s, shorter than the "
                f"{handed.lifetime:.0f} s tokens kubelet issues for this driver: remove it, "
                "lower the CSIDriver's tokenRequests expirationSeconds "
                "(chart: csi.tokenExpirationSeconds), or let the driver mint tokens "
                "(chart: csi.mintTokens)",
            )
        raise PublishError(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"kubelet handed over no token for audience {self.settings.workload_audience}: "
            "the connectors-csi CSIDriver must list it in spec.tokenRequests "
            "(the chart does), or the driver must be allowed to mint tokens (csi.mintTokens)",
        )

    def _render(
        self,
        request: VolumeRequest,
        targets: list[Target],
        token: MintedToken,
    ) -> dict[str, str]:
        """Every file at the mount root: each class's configurations rendered once for all
        of its connectors (a later class's file replaces an earlier one of the same name,
        as Alauda documents), then the built-in files, less the `!` exclusions."""
        by_class: dict[str, list[Target]] = {}
        for target in targets:
            by_class.setdefault(target[1].name, []).append(target)
        rendered_files: dict[str, str] = {}
        for members in by_class.values():
            (first, cls, url), others = members[0], members[1:]
            for configuration in request.configurations:
                if cls.spec.configuration(configuration) is None:
                    continue  # another class of the mount has it (checked in _resolve_all)
                try:
                    rendered = render.render_configuration(
                        first, cls, configuration, render.RenderContext(url, token.token),
                        overrides=request.params_for(configuration),
                        others=[(c, render.RenderContext(u, token.token)) for c, _, u in others],
                    )  # fmt: skip
                except (TemplateError, NotFoundError) as exc:
                    # A template that indexes by the token would quote it in its error.
                    message = str(exc).replace(token.token, "<token>")
                    raise PublishError(grpc.StatusCode.FAILED_PRECONDITION, message) from None
                rendered_files.update(rendered)
        rendered_files.update(builtin_files(targets[0][2], token.token))
        for excluded in request.excluded_files:
            rendered_files.pop(excluded, None)
        return rendered_files

    # Unpublishing -------------------------------------------------------------------------

    def unpublish(self, target: Path) -> None:
        memoryfs.unmount(target)
        files.remove(target)
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


BUILTIN_TOKEN = "context.token"
BUILTIN_PROXY_ADDRESS = "connector.status.proxyAddress"


def builtin_files(proxy_url: str, token: str) -> dict[str, str]:
    """Alauda's built-in files that mean something here: the token alone, for clients
    configured by hand, and the (first) connector's proxy address. Its forward-proxy and
    CA files are not written: there is no forward proxy, and the proxy's CA is not the
    driver's to know (docs/compatibility.md)."""
    return {BUILTIN_TOKEN: token, BUILTIN_PROXY_ADDRESS: proxy_url}


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
