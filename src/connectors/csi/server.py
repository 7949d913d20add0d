"""`connectors csi`: the node plugin's gRPC server on a unix socket, fed by a KubeStore."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path

import grpc

from connectors.api.errors import UsageError
from connectors.auth import kubeauth
from connectors.classes.builtin import builtin_classes
from connectors.csi import minting, publisher, services
from connectors.csi.minting import MintedToken
from connectors.csi.proto import csi_pb2_grpc
from connectors.csi.volume import PodInfo
from connectors.kube.client import KubeClient
from connectors.kube.config import ClusterConfig
from connectors.store.kubestore import KubeStore

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class CsiSettings:
    endpoint: str
    node_id: str
    publisher: publisher.PublisherSettings  # what a mount gets, and its tokens


def socket_path(endpoint: str) -> Path:
    if not endpoint.startswith("unix://"):
        raise UsageError(f"--endpoint {endpoint!r} must be unix:///path/to/socket")
    return Path(endpoint.removeprefix("unix://"))


async def run(config: ClusterConfig, options: CsiSettings, stop: asyncio.Event) -> None:
    """Serve until `stop` is set."""
    path = socket_path(options.endpoint)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)  # a socket left by a previous run
    async with KubeClient(config) as kube:
        store = KubeStore(kube, base_classes=builtin_classes(), secrets=False)
        await store.start()

        async def mint(pod: PodInfo, audiences: list[str], seconds: int) -> MintedToken:
            return await minting.request(kube, pod, audiences, seconds)

        async def may_use(pod: PodInfo, namespace: str, name: str) -> bool:
            user = kubeauth.service_account_user(pod.namespace, pod.service_account)
            groups = kubeauth.service_account_groups(pod.namespace)
            body = kubeauth.access_review(
                user, groups=groups, uid="", namespace=namespace, name=name, verb="get"
            )
            answer = await kube.request("POST", kubeauth.ACCESS_REVIEWS, body=body)
            return bool((answer.get("status") or {}).get("allowed"))

        server = grpc.aio.server()
        csi_pb2_grpc.add_IdentityServicer_to_server(
            services.IdentityService(lambda: not store.readiness()), server
        )
        csi_pb2_grpc.add_NodeServicer_to_server(
            services.NodeService(
                publisher.Publisher(store, mint, may_use, options.publisher), options.node_id
            ),
            server,
        )
        server.add_insecure_port(f"unix://{path}")
        await server.start()
        log.info("CSI driver %s serving on %s", services.DRIVER_NAME, path)
        try:
            await stop.wait()
        finally:
            await server.stop(grace=5)
            await store.stop()
