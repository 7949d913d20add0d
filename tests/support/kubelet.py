"""A stand-in for kubelet's side of CSI, for fast, narrow driver tests (the real kubelet
takes the same path in tests/node/test_seed_on_a_node.py, with the seed's Pods).

It does what kubelet does for a Pod's inline CSI volumes and nothing else: for each
`csi` volume of the Pod object (read from the real API server) it calls
NodePublishVolume over real gRPC on the driver's socket, with the volume id, target path,
capability and volume context kubelet would send (the volume's attributes, the Pod's
name, namespace, uid and ServiceAccount for `podInfoOnMount`, the ephemeral flag, and
the Pod's tokens for the audiences the shipped CSIDriver lists in `tokenRequests`, minted
bound to the Pod as kubelet mints them); `republish` repeats the call as kubelet does for
`requiresRepublish`, with the same tokens until `renew_tokens` (kubelet renews at 80% of
their life); `unpublish` calls NodeUnpublishVolume. The target path follows kubelet's
layout under a root directory.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import yaml

from connectors.auth import reviews
from connectors.csi.proto import csi_pb2, csi_pb2_grpc
from tests.support.testcluster import TestCluster

CSIDRIVER = Path(__file__).parents[2] / "deploy" / "csi" / "csidriver.yaml"


def shipped_token_requests() -> list[tuple[str, int]]:
    """(audience, expirationSeconds) of each tokenRequest of the CSIDriver we ship."""
    spec = yaml.safe_load(CSIDRIVER.read_text())["spec"]
    return [(r["audience"], int(r["expirationSeconds"])) for r in spec.get("tokenRequests", [])]


class KubeletStandIn:
    def __init__(
        self,
        cluster: TestCluster,
        socket: Path,
        root: Path,
        token_requests: list[tuple[str, int]] | None = None,
    ) -> None:
        self.cluster = cluster
        self.root = root
        self.token_requests = shipped_token_requests() if token_requests is None else token_requests
        self.channel = grpc.insecure_channel(f"unix://{socket}")
        self.node = csi_pb2_grpc.NodeStub(self.channel)
        self._tokens: dict[str, str] = {}  # pod uid -> the serviceAccount.tokens JSON
        self._published: dict[str, str] = {}  # target path -> volume id

    def renew_tokens(self) -> None:
        """Forget the tokens handed over, as kubelet does once they near their expiry."""
        self._tokens.clear()

    def pod_tokens(self, pod: dict[str, Any]) -> str:
        metadata = pod["metadata"]
        uid = metadata["uid"]
        if uid not in self._tokens:
            tokens = {}
            for audience, seconds in self.token_requests:
                token = self.cluster.kubectl(
                    "create", "token", pod["spec"].get("serviceAccountName", "default"),
                    "-n", metadata["namespace"], f"--audience={audience}",
                    f"--duration={seconds}s", "--bound-object-kind=Pod",
                    f"--bound-object-name={metadata['name']}", f"--bound-object-uid={uid}",
                ).stdout.strip()  # fmt: skip
                claims = reviews.unverified_claims(token) or {}
                expires = datetime.fromtimestamp(claims["exp"], UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                tokens[audience] = {"token": token, "expirationTimestamp": expires}
            self._tokens[uid] = json.dumps(tokens)
        return self._tokens[uid]

    def close(self) -> None:
        """Unpublish what is still published (as kubelet does for deleted Pods: each
        target is a tmpfs mount), then hang up."""
        for target, volume_id in list(self._published.items()):
            self._unpublish(volume_id, target)
        self.channel.close()

    def _unpublish(self, volume_id: str, target: str) -> None:
        self.node.NodeUnpublishVolume(
            csi_pb2.NodeUnpublishVolumeRequest(volume_id=volume_id, target_path=target),
            timeout=30,
        )
        self._published.pop(target, None)

    def pod(self, namespace: str, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.cluster.kubectl_json("get", "pod", name, "-n", namespace)
        return found

    def volumes(self, pod: dict[str, Any]) -> list[dict[str, Any]]:
        return [v for v in pod["spec"].get("volumes", []) if "csi" in v]

    def target(self, pod: dict[str, Any], volume: str) -> Path:
        uid = str(pod["metadata"]["uid"])
        return self.root / "pods" / uid / "volumes" / "kubernetes.io~csi" / volume / "mount"

    def request(
        self, pod: dict[str, Any], volume: dict[str, Any]
    ) -> csi_pb2.NodePublishVolumeRequest:
        metadata = pod["metadata"]
        context = dict(volume["csi"].get("volumeAttributes") or {})
        context.update({
            "csi.storage.k8s.io/pod.name": metadata["name"],
            "csi.storage.k8s.io/pod.namespace": metadata["namespace"],
            "csi.storage.k8s.io/pod.uid": metadata["uid"],
            "csi.storage.k8s.io/serviceAccount.name":
                pod["spec"].get("serviceAccountName", "default"),
            "csi.storage.k8s.io/ephemeral": "true",
        })  # fmt: skip
        if self.token_requests:
            context["csi.storage.k8s.io/serviceAccount.tokens"] = self.pod_tokens(pod)
        digest = hashlib.sha256(f"{metadata['uid']}{volume['name']}".encode()).hexdigest()
        capability = csi_pb2.VolumeCapability(
            mount=csi_pb2.VolumeCapability.MountVolume(),
            access_mode=csi_pb2.VolumeCapability.AccessMode(
                mode=csi_pb2.VolumeCapability.AccessMode.SINGLE_NODE_WRITER
            ),
        )
        return csi_pb2.NodePublishVolumeRequest(
            volume_id=f"csi-{digest}",
            target_path=str(self.target(pod, volume["name"])),
            volume_capability=capability,
            readonly=bool(volume["csi"].get("readOnly", False)),
            volume_context=context,
        )

    def publish(self, namespace: str, name: str) -> dict[str, Path]:
        """Mount every CSI volume of the Pod, as kubelet does before starting it."""
        pod = self.pod(namespace, name)
        return {volume["name"]: self.publish_volume(pod, volume) for volume in self.volumes(pod)}

    def publish_volume(self, pod: dict[str, Any], volume: dict[str, Any]) -> Path:
        """Mount one volume (the Pod's, or one a test writes) for the Pod; its target."""
        request = self.request(pod, volume)
        self.node.NodePublishVolume(request, timeout=30)
        self._published[request.target_path] = request.volume_id
        return Path(request.target_path)

    republish = publish  # kubelet repeats the same call for requiresRepublish

    def unpublish(self, namespace: str, name: str) -> None:
        pod = self.pod(namespace, name)
        for volume in self.volumes(pod):
            request = self.request(pod, volume)
            self._unpublish(request.volume_id, request.target_path)
